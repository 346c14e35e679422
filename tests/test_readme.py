"""What the README states about the zoo and the output files, checked against the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sapiens2.zoo import MODELS, ModelInfo

README = Path(__file__).resolve().parents[1] / "README.md"


def section(title: str) -> str:
    """The README text from a heading (any level) to the next heading of the same or a higher level."""
    text = README.read_text(encoding="utf-8")
    found = re.search(rf"^(#+) {re.escape(title)}\n", text, re.M)
    assert found, f"README has no section {title!r}"
    level = len(found.group(1))
    rest = text[found.end():]
    nxt = re.search(rf"^#{{1,{level}}} ", rest, re.M)
    return rest[: nxt.start()] if nxt else rest


def table(text: str) -> list[list[str]]:
    """The rows of the first Markdown table in `text`, header excluded, cells stripped."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines[2:]]


_TASK_WORDS = {"person detector": "detect"}


def _tasks(cell: str) -> list[tuple[str, int | None]]:
    """`pose (308), seg (29), normal` -> [(pose, 308), (seg, None), (normal, None)]; `pose (17, 133)` -> both."""
    out = []
    for word, numbers in re.findall(r"([a-z][a-z ]*?)(?: \(([^)]*)\))?(?:, |$)", cell):
        task = _TASK_WORDS.get(word, word)
        counts = [int(n) for n in re.findall(r"\d+", numbers)] if task == "pose" and numbers else [None]
        out += [(task, n) for n in counts]
    return out


def _selected(generation: str, task: str, keypoints: int | None) -> list[ModelInfo]:
    gen = {"Sapiens2": 2, "both": 2, "Sapiens v1": 1}[generation]
    return [m for m in MODELS.values() if m.generation == gen and m.task == task
            and (keypoints is None or m.keypoints == keypoints)]


def _repo(pattern: str, m: ModelInfo) -> str:
    suffix = "" if m.format == "pth" else f"-{m.format}"
    return pattern.replace("<size>", m.arch).replace("<task>", m.task).replace("[-<format>]", suffix)


def test_the_model_table_agrees_with_the_zoo():
    covered: set[str] = set()
    for generation, tasks, sizes, formats, repo, licence in table(section("The model zoo")):
        for task, keypoints in _tasks(tasks):
            models = _selected(generation, task, keypoints)
            assert models, f"README promises {generation} {task} ({keypoints}), which the zoo lacks"
            assert sorted({m.arch for m in models}) == sorted(sizes.split(", ")), (generation, task, keypoints)
            assert {m.format for m in models} == set(formats.split(", ")), (generation, task, keypoints)
            assert {m.license for m in models} == {licence}, (generation, task, keypoints)
            pattern = re.search(r"`([^`]+)`", repo).group(1)
            for m in models:
                if repo.startswith("not published"):
                    assert not m.on_hub and m.local_relpath == _repo(pattern, m), m.name
                else:
                    assert m.repo == _repo(pattern, m), m.name
            covered |= {m.name for m in models}
    assert covered == set(MODELS), f"zoo entries the README table does not show: {sorted(set(MODELS) - covered)}"


@pytest.mark.parametrize("bad", ["| Sapiens v1 | pose (308) | 0.3b, 0.6b, 1b, 2b | pth | `facebook/sapiens-<task>-<size>` | CC-BY-NC-4.0 |"])
def test_the_table_check_catches_a_promise_the_zoo_lacks(bad):
    generation, tasks, sizes, *_ = table("|h|\n|-|\n" + bad)[0]
    (task, keypoints), = _tasks(tasks)
    assert sorted({m.arch for m in _selected(generation, task, keypoints)}) != sorted(sizes.split(", "))


# --------------------------------------------------------------------------------- output arrays, as stated

H, W = 48, 36  # the photo


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> Path:
    """Every array the CLI writes, from tiny networks on one 48 x 36 photo (pose: two given boxes)."""
    import json

    from safetensors.torch import save_file

    from tests.runner.conftest import DENSE_SIZE, _tiny, cli, write_photo

    root = tmp_path_factory.mktemp("readme_outputs")
    models = []
    for task in ("pose", "seg", "normal", "pointmap", "albedo", "matting", "depth"):
        net = _tiny(task).eval()
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, root / f"{task}.safetensors")
        models.append(f"--model={task}={root / f'{task}.safetensors'}")
    img = write_photo(root / "in" / "p.jpg", H, W)
    (root / "dets.json").write_text(json.dumps([
        {"file_name": "p.jpg", "image_id": 1, "bbox": [2, 3, 20, 30], "score": 0.8},
        {"file_name": "p.jpg", "image_id": 1, "bbox": [10, 5, 12, 40], "score": 0.6}]))
    assert cli("run", "--tasks", "seg,normal,pointmap,albedo,matting,depth", img, *models[1:],
               "--input-size", DENSE_SIZE, "--save", "npz,png,ply", "--out", root / "out") == 0
    assert cli("pose", img, "--model", root / "pose.safetensors", "--input-size", DENSE_SIZE, "--boxes", root / "dets.json", "--detector", "none", "--save", "json,npz",
               "--out", root / "out") == 0
    return root / "out"


def _read(path: Path, array: str):
    import cv2
    import numpy as np

    if path.suffix == ".png":
        return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA) \
            if path.name.endswith("_cutout.png") else _png(path)
    loaded = np.load(path)
    return loaded[array] if array else loaded


def _png(path: Path):
    import cv2

    a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return a[..., ::-1] if a.ndim == 3 else a


def test_every_array_has_the_shape_dtype_and_columns_the_readme_states(outputs):
    import json

    import numpy as np

    record = json.loads((outputs / "p_pose.json").read_text())
    people = record["instances"]
    sizes = {"H": H, "W": W, "N": len(people), "K": record["num_keypoints"]}
    rows = table(section("Arrays: shapes, columns and units"))
    assert rows, "README states no array"
    seen = set()
    for file, array, shape, dtype, values in rows:
        file, array = file.strip("`"), array.strip("`")
        got = _read(outputs / f"p{file}", array)
        expected = tuple(int(d) if d.isdigit() else sizes[d] for d in shape.split(" x "))
        assert got.shape == expected and got.dtype == np.dtype(dtype), (file, array, got.shape, got.dtype)
        if "in [0, 1]" in values:
            assert 0 <= got.min() and got.max() <= 1, (file, array)
        seen.add((file, array))
    # the columns the README names, checked against the JSON and the other arrays
    pose = np.load(outputs / "p_pose.npz")
    boxes = pose["boxes"]
    np.testing.assert_allclose(boxes[:, :4], [p["bbox"] for p in people], atol=1e-3)  # x1, y1, x2, y2
    np.testing.assert_allclose(boxes[:, 4], [p["bbox_score"] for p in people], atol=1e-6)  # the score
    np.testing.assert_allclose(sorted(boxes[:, 4]), [0.6, 0.8], rtol=1e-6)  # the given detection scores
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    np.testing.assert_allclose(pose["keypoints"], [p["keypoints"] for p in people], atol=1e-2)
    np.testing.assert_allclose(pose["scores"], [p["keypoint_scores"] for p in people], atol=1e-3)
    seg = np.load(outputs / "p_seg.npy")
    assert seg.min() >= 0 and seg.max() <= 28 and (_png(outputs / "p_seg.png") == seg).all()
    points = np.load(outputs / "p_points.npy")
    np.testing.assert_array_equal(np.load(outputs / "p_depth.npy"), points[..., 2].astype(np.float16))
    albedo = np.load(outputs / "p_albedo.npy")
    assert np.abs(_png(outputs / "p_albedo.png").astype(float) - albedo * 255).max() <= 1
    matting = np.load(outputs / "p_matting.npz")
    assert np.abs(_png(outputs / "p_alpha.png") - matting["alpha"] * 65535).max() <= 1
    cutout = _read(outputs / "p_cutout.png", "")
    assert np.abs(cutout[..., 3] - matting["alpha"] * 255).max() <= 1
    from sapiens2.tasks.ply import read_ply

    ply_points, ply_colours = read_ply(outputs / "p.ply")
    assert "`x y z` float32, the points of `_points.npy`" in section("Arrays: shapes, columns and units")
    np.testing.assert_array_equal(ply_points, points[seg > 0])  # seg ran in the same pass: its foreground
    assert ply_colours is not None and ply_colours.dtype == np.uint8 and ply_colours.shape == ply_points.shape
    # and nothing written goes unstated
    written = set()
    for path in outputs.iterdir():
        what = path.name.removeprefix("p")
        if path.suffix == ".npz":
            written |= {(what, k) for k in np.load(path).files}
        elif path.suffix in (".npy", ".png"):
            written.add((what, ""))
    assert written == seen, written ^ seen
