"""Sanity of the shipped keypoint metadata."""

import numpy as np
import pytest

from sapiens2.keypoints import coco17, coco_wholebody133, keypoints308, load_keypoint_set


@pytest.fixture(scope="module", params=["keypoints308", "coco17", "coco_wholebody133"])
def kset(request):
    return load_keypoint_set(request.param)


def test_sizes():
    assert len(keypoints308()) == 308
    assert len(coco17()) == 17
    assert len(coco_wholebody133()) == 133


def test_names_unique_and_indexable(kset):
    assert len(set(kset.names)) == len(kset.names)
    for i, n in enumerate(kset.names):
        assert kset.index(n) == i
    with pytest.raises(KeyError):
        kset.index("not_a_keypoint")


def test_flip_indices_are_a_symmetric_involution(kset):
    fi = np.array(kset.flip_indices)
    assert sorted(fi) == list(range(len(kset)))
    np.testing.assert_array_equal(fi[fi], np.arange(len(kset)))
    for a, b in kset.flip_pairs:
        assert fi[a] == b and fi[b] == a
    swapped = {i for p in kset.flip_pairs for i in p}
    assert swapped == {i for i in range(len(kset)) if fi[i] != i}


def test_flip_pairs_pair_a_left_point_with_a_right_point(kset):
    # (the reference pairs are not always the same name mirrored: some eyebrow and ear
    # points are numbered differently on the two sides, so only the side is checked)
    def side(name):
        tokens = set(name.split("_"))
        return ("L" if tokens & {"left", "l"} else "") + ("R" if tokens & {"right", "r"} else "")

    checked = set()

    for a, b in kset.flip_pairs:
        na, nb = kset.names[a], kset.names[b]
        if not (side(na) or side(nb)):  # e.g. lip midpoints 1 <-> 2, face-0 <-> face-16
            continue
        assert {side(na), side(nb)} == {"L", "R"}, (na, nb)
        checked.add(a)
    assert len(checked) > len(kset.flip_pairs) // 2


def test_colours_and_sigmas_counts(kset):
    assert len(kset.keypoint_colors) == len(kset)
    assert len(kset.skeleton_link_colors) == len(kset.skeleton_links)
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in kset.keypoint_colors)
    assert len(kset.sigmas) == len(kset) and min(kset.sigmas) > 0
    for a, b in kset.skeleton_links:
        assert 0 <= a < len(kset) and 0 <= b < len(kset)


def test_308_layout_facts():
    m = keypoints308()
    assert len(m.flip_pairs) == 146
    assert sum(1 for i, j in enumerate(m.flip_indices) if i == j) == 16
    assert len(m.skeleton_links) == 65
    assert max(max(link) for link in m.skeleton_links) == 62  # face points: dots only
    sizes = {k: len(v) for k, v in m.subsets.items()}
    assert sizes == {"body": 17, "foot": 6, "face": 238, "left_hand": 20, "right_hand": 20, "extra": 7}
    everything = sorted(i for v in m.subsets.values() for i in v)
    assert everything == list(range(308))  # the subsets partition the set
    # the body subset is COCO-17 order
    assert [m.names[i] for i in m.subsets["body"]] == list(coco17().names)
    assert m.index("left_wrist") == 62 and m.index("right_wrist") == 41 and m.index("neck") == 69
    face = set(m.subsets["face"])
    assert {i for i, s in enumerate(m.sigmas) if s == 0.010} == face
    assert m.keypoint_colors[0] == (51, 153, 255)


def test_subsets_are_read_only():
    with pytest.raises(TypeError):
        keypoints308().subsets["body"] = (0,)


def test_wholebody_subsets():
    m = coco_wholebody133()
    assert [len(m.subsets[k]) for k in ("body", "foot", "face", "left_hand", "right_hand")] == [
        17, 6, 68, 21, 21,
    ]
    assert m.names[m.subsets["left_hand"][0]] == "left_hand_root"


def test_keypoint_sets_pickle_for_worker_processes(kset):
    import pickle

    back = pickle.loads(pickle.dumps(kset))
    assert back == kset and back.index(kset.names[-1]) == len(kset) - 1
    with pytest.raises(TypeError):
        back.subsets["x"] = (0,)  # still read-only
