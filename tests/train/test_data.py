"""Datasets, transforms and the resumable sample stream."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sapiens2.keypoints import keypoints308
from sapiens2.keypoints.topdown import bbox_xyxy_to_center_scale, fix_aspect_ratio, udp_warp_matrix
from sapiens2.keypoints.udp import udp_decode
from sapiens2.train.config import config_from_dict
from sapiens2.train.datasets import (
    CocoKeypoints,
    DenseFolder,
    SegFolder,
    StreamSampler,
    TransformedDataset,
)
from sapiens2.train.schema import DatasetConfig
from sapiens2.train.transforms import (
    DenseTransform,
    KeypointLayout,
    PoseAugment,
    PoseTransform,
    SegAugment,
    SegTransform,
)
from sapiens2.training.config import ConfigError

from .conftest import IMG_H, IMG_W, H, W, make_dense_data, make_pose_data, make_seg_data, tiny_config


def test_stream_sampler_resumes_mid_epoch_and_shards():
    full = StreamSampler(5, seed=3)
    it = iter(full)
    first = [next(it) for _ in range(12)]
    assert sorted(i for i, e in first[:5]) == list(range(5)) and {e for _, e in first[:5]} == {0}
    again = iter(StreamSampler(5, seed=3, start=7))
    assert [next(again) for _ in range(5)] == first[7:12]
    ranks = [StreamSampler(5, seed=3, rank=r, world_size=2).epoch_indices(0) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 3 and set(ranks[0]) | set(ranks[1]) == set(range(5))


def test_pose_source_subset_missing_points_and_flip_layout(tmp_path):
    make_pose_data(tmp_path, n=2)
    body = list(keypoints308().subsets["body"])
    src = CocoKeypoints(DatasetConfig(root=str(tmp_path), annotations="train.json", images="images",
                                      keypoint_indices=body))
    assert len(src) == 2 and src.num_keypoints == 17
    s = src.load(0)
    assert s["keypoints"].shape == (17, 2) and s["image"].shape == (IMG_H, IMG_W, 3)
    layout = src.layout()
    # COCO-17 order: nose, L/R eye, L/R ear, ... -> the flip swaps left and right
    assert layout.flip_indices[:5] == (0, 2, 1, 4, 3)
    assert len(layout.upper_ids) == 11 and len(layout.lower_ids) == 6
    full = CocoKeypoints(DatasetConfig(root=str(tmp_path), annotations="train.json", images="images"))
    assert full.num_keypoints == 308 and (full.load(0)["visible"] == 0).sum() == 20
    with pytest.raises(ConfigError, match="out of range"):
        CocoKeypoints(DatasetConfig(root=str(tmp_path), annotations="train.json", keypoint_indices=[400]))


def test_pose_target_peaks_at_the_transformed_keypoints(tmp_path):
    make_pose_data(tmp_path, n=1)
    src = CocoKeypoints(DatasetConfig(root=str(tmp_path), annotations="train.json", images="images",
                                      keypoint_indices=list(keypoints308().subsets["body"])))
    t = PoseTransform((H * 4, W * 4), src.layout(), PoseAugment(heatmap_sigma=2.0), augment=False)
    out = t(src.load(0), np.random.default_rng(0))
    assert out["image"].shape == (3, H * 4, W * 4) and out["heatmaps"].shape == (17, H, W)
    kp, _ = udp_decode(out["heatmaps"], input_size=(H * 4, W * 4))
    raw = src.load(0)
    # without augmentation the crop is the padded box; decoding the target lands on the warped points
    c, sc = bbox_xyxy_to_center_scale(raw["bbox"], 1.25)
    m = udp_warp_matrix(c, fix_aspect_ratio(sc, W / H), (H * 4, W * 4))
    expected = raw["keypoints"] @ m[:, :2].T + m[:, 2]
    vis = out["keypoint_weights"] > 0
    assert vis.sum() >= 10
    assert np.abs(kp[vis] - expected[vis]).max() < 1.0


def test_pose_augmentation_is_seeded():
    rng_out = []
    for _ in range(2):
        s = {"image": np.full((IMG_H, IMG_W, 3), 128, np.uint8), "keypoints": np.random.default_rng(1).uniform(10, 40, (17, 2)),
             "visible": np.ones(17, np.float32), "bbox": np.array([5, 5, 50, 70], np.float32)}
        t = PoseTransform((H, W), KeypointLayout(tuple(range(17))), PoseAugment(heatmap_sigma=1.0))
        rng_out.append(t(s, np.random.default_rng(42)))
    assert all(np.array_equal(rng_out[0][k], rng_out[1][k]) for k in rng_out[0])


def test_seg_class_map_and_flip_swaps(tmp_path):
    make_seg_data(tmp_path, n=1)
    src = SegFolder(DatasetConfig(root=str(tmp_path), class_map={"0": 0, "1": 5}))
    label = src.load(0)["label"]
    assert set(np.unique(label)) == {0, 5, 255}  # 2 / 3 unmapped -> ignored
    t = SegTransform((H, W), 29, train=False)
    s = {"image": np.zeros((H, W, 3), np.uint8), "label": np.full((H, W), 5, np.uint8)}
    assert (t.flip_lut[s["label"]] == 14).all()  # Left_Foot <-> Right_Foot
    assert t(s, np.random.default_rng(0))["label"].shape == (H, W)


def test_normals_flip_negates_x_and_nan_is_masked(tmp_path):
    make_dense_data("normal", tmp_path, n=1)
    src = DenseFolder("normal", DatasetConfig(root=str(tmp_path)))
    s = src.load(0)
    assert not s["mask"][0, 0]  # NaN normal
    t = DenseTransform("normal", (H, W), train=False)
    out = t(s, np.random.default_rng(0))
    m = out["mask"]
    assert np.allclose(np.linalg.norm(out["target"][:, m], axis=0), 1, atol=1e-4)
    assert (out["target"][:, ~m] == -1000).all()
    flipped = dict(s)
    DenseTransform("normal", (H, W))._flip(flipped)
    assert np.allclose(flipped["target"][:, ::-1][..., 0], -s["target"][..., 0])


def test_pointmap_target_is_canonical_and_consistent_with_K(tmp_path):
    make_dense_data("pointmap", tmp_path, n=1)
    src = DenseFolder("pointmap", DatasetConfig(root=str(tmp_path)))
    out = DenseTransform("pointmap", (H, W), train=False)(src.load(0), np.random.default_rng(0))
    fx, fy, cx, cy = out["K"]
    assert out["scale"] == pytest.approx(W / fx)
    p, m = out["target"], out["mask"]
    v, u = np.mgrid[0:H, 0:W]
    # canonical points keep X / Z and Y / Z of the camera's pinhole model
    assert np.allclose(p[0][m] / p[2][m], ((u - cx) / fx)[m], atol=1e-5)
    assert np.allclose(p[1][m] / p[2][m], ((v - cy) / fy)[m], atol=1e-5)
    assert out["mean_depth"] == pytest.approx(p[2][m].mean(), rel=1e-5)


def test_rejected_samples_are_refetched(tmp_path):
    make_dense_data("albedo", tmp_path, n=2)
    src = DenseFolder("albedo", DatasetConfig(root=str(tmp_path)))
    calls = []

    def reject_first(sample, rng):
        calls.append(sample["name"])
        return None if len(calls) == 1 else {"name": sample["name"]}

    ds = TransformedDataset(src, reject_first, seed=0)
    assert ds[(0, 0)]["name"] in ("f0", "f1") and len(calls) == 2


def test_missing_folder_names_the_field(tmp_path):
    with pytest.raises(ConfigError) as e:
        DenseFolder("normal", DatasetConfig(root=str(tmp_path)), "data.train[0]")
    assert e.value.field == "data.train[0].images"


def _coco_json(path, parts: dict[str, int]) -> None:
    """One person whose annotation has each field of `parts` with that many labelled points."""
    import json

    rng = np.random.default_rng(0)
    ann = {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [5, 5, 30, 60], "area": 1800.0}
    for field, n in parts.items():
        kp = np.concatenate([rng.uniform(5, 35, (n, 2)), np.full((n, 1), 2.0)], 1)
        ann[field] = kp.ravel().tolist()
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 70}],
                                "annotations": [ann]}))


@pytest.mark.parametrize("parts, count, kset", [
    ({"keypoints": 17}, 17, "coco17"),
    ({"keypoints": 17, "foot_kpts": 6, "face_kpts": 68, "lefthand_kpts": 21, "righthand_kpts": 21}, 133,
     "coco_wholebody133"),
])
def test_coco17_and_wholebody_sources_use_their_own_metadata(tmp_path, parts, count, kset):
    """Sapiens v1's COCO-17 and COCO-WholeBody-133 labels: WholeBody's five fields are joined in its order,
    and flips, half-body groups and OKS sigmas come from that set's metadata."""
    import sapiens2.keypoints as K

    _coco_json(tmp_path / "train.json", parts)
    src = CocoKeypoints(DatasetConfig(root=str(tmp_path), annotations="train.json"))
    meta = getattr(K, kset)()
    assert src.num_keypoints == count and src.samples[0]["keypoints"].shape == (count, 2)
    layout = src.layout()
    assert layout.flip_indices == tuple(meta.flip_indices)
    assert np.allclose(src.sigmas(), meta.sigmas)
    if count == 133:  # the face points follow the 17 body and 6 foot points
        import json

        face = np.asarray(json.loads((tmp_path / "train.json").read_text())["annotations"][0]["face_kpts"]).reshape(-1, 3)
        assert np.allclose(src.samples[0]["keypoints"][23:91], face[:, :2])


@pytest.mark.parametrize("box, flag", [
    ([20, 25, 36, 45], cv2.INTER_CUBIC),  # a small person: the warp enlarges
    ([0, 0, IMG_W - 1, IMG_H - 1], cv2.INTER_AREA),  # the whole image into a smaller input: it shrinks
])
def test_pose_crop_interpolation_follows_the_scale(box, flag):
    """The reference warps training crops with INTER_AREA when shrinking and INTER_CUBIC when enlarging."""
    img = np.random.default_rng(0).integers(0, 256, (IMG_H, IMG_W, 3), dtype=np.uint8)
    s = {"image": img, "keypoints": np.full((17, 2), 30.0), "visible": np.ones(17, np.float32),
         "bbox": np.array(box, np.float32)}
    size = (H, W)
    out = PoseTransform(size, KeypointLayout(tuple(range(17))), PoseAugment(heatmap_sigma=1.0), augment=False)(
        s, np.random.default_rng(0))
    c, sc = bbox_xyxy_to_center_scale(s["bbox"], 1.25)
    m = udp_warp_matrix(c, fix_aspect_ratio(sc, W / H), (H, W))
    warped = {f: cv2.warpAffine(img, m, (W, H), flags=f, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
              for f in (cv2.INTER_AREA, cv2.INTER_CUBIC, cv2.INTER_NEAREST)}
    got = out["image"].transpose(1, 2, 0)
    assert np.array_equal(got, warped[flag])
    # (warpAffine computes INTER_AREA as bilinear, so the other candidates are cubic and nearest)
    assert all(not np.array_equal(got, w) for f, w in warped.items() if f != flag)


def test_seg_background_swap_needs_a_folder_of_jpegs(tmp_path):
    with pytest.raises(ConfigError, match="names no folder") as e:
        SegAugment(background_p=0.8)
    assert e.value.field == "augment.background_p"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="holds no .jpg") as e:
        SegAugment(background_dir=str(empty))
    assert e.value.field == "augment.background_dir"
    with pytest.raises(ConfigError, match="is not a folder"):
        SegAugment(background_dir=str(tmp_path / "missing"))
    assert SegAugment().swap_p == 0.0 and SegAugment(background_p=0.0).swap_p == 0.0
    cv2.imwrite(str(empty / "bg.jpg"), np.full((40, 30, 3), 200, np.uint8))
    assert SegAugment(background_dir=str(empty)).swap_p == 0.8  # the reference's probability by default
    assert SegAugment(background_dir=str(empty), background_p=0.5).swap_p == 0.5


def test_seg_background_swap_config_error_and_warning(tmp_path, caplog):
    data = tiny_config("seg", tmp_path / "run", {"root": str(tmp_path)})
    data["augment"] = {"background_p": 0.8}
    with pytest.raises(ConfigError) as e:
        config_from_dict(data)
    assert e.value.field == "augment.background_p"
    with caplog.at_level("WARNING", logger="sapiens2.train.transforms"):
        SegTransform((H, W), 29, train=True)
    assert "background swap is off" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="sapiens2.train.transforms"):
        SegTransform((H, W), 29, train=False)
    assert not caplog.text
