"""Head pose: the PnP fit of the generic face, its sign conventions, faceless / degenerate inputs, and the stage
through the engine (stand-in keypoint predictor, and the real `Pose` steps on a stand-in network)."""

import dataclasses
import itertools
import pickle

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from sapiens2.curate.config import (
    ClipConfig, ClusterConfig, CurateConfig, DedupConfig, HeadConfig, PersonConfig,
)
from sapiens2.curate.engine import MANIFEST_SCHEMA, curate
from sapiens2.curate.headpose import (
    CANONICAL_FACE, HeadPoseStage, PoseKeypoints, angles_to_rotation, camera_matrix, canonical_points,
    face_indices, fit_keypoints, load_pose_keypoints, rotation_to_angles, solve_head_pose,
)
from sapiens2.curate.sources import collect_items
from sapiens2.curate.stages import REASONS, Batch, Loader, ModelLoadError, PersonStage
from sapiens2.keypoints.metadata import keypoints308
from tests.curate.conftest import colour_detector

H, W = 768, 1024


def project(yaw, pitch, roll, size=(H, W), centre=(0.5, 0.45), face_px=160.0):
    """The generic face's landmarks (11, 2) seen at these angles, about `face_px` wide, at `centre` (fractions)."""
    k = camera_matrix(*size)
    z = k[0, 0] * 90.0 / face_px  # the outer eye corners are 90 mm apart
    t = np.array([(centre[0] * size[1] - k[0, 2]) * z / k[0, 0], (centre[1] * size[0] - k[1, 2]) * z / k[1, 1], z])
    rvec, _ = cv2.Rodrigues(angles_to_rotation(yaw, pitch, roll))
    return cv2.projectPoints(canonical_points(), rvec, t, k, None)[0].reshape(-1, 2)


def keypoints_at(points, score=0.9):
    """(308, 3) keypoints: the face landmarks at `points`, everything else scored 0."""
    kp = np.zeros((308, 3))
    kp[face_indices(), :2] = points
    kp[face_indices(), 2] = score
    return kp


@pytest.mark.parametrize("yaw, pitch, roll", list(itertools.product((-60, -25, 0, 40), (-30, 0, 20), (-20, 0, 15))))
def test_pnp_recovers_known_angles(yaw, pitch, roll):
    (y, p, r), error = solve_head_pose(project(yaw, pitch, roll), canonical_points(), (H, W))
    assert (y, p, r) == pytest.approx((yaw, pitch, roll), abs=1e-3) and error < 1e-6
    noisy = project(yaw, pitch, roll) + np.random.default_rng(0).normal(0, 0.5, (11, 2))  # half-pixel noise
    (y, p, r), error = solve_head_pose(noisy, canonical_points(), (H, W))
    assert (y, p, r) == pytest.approx((yaw, pitch, roll), abs=2.0) and error < 0.05


def test_sign_conventions_read_off_the_picture():
    names = [n for n, _ in CANONICAL_FACE]
    r_eye, l_eye = names.index("r_outer_end_of_upper_lash_line"), names.index("l_outer_end_of_upper_lash_line")
    nose, inner = names.index("tip_of_nose"), [names.index(f"{s}_inner_end_of_upper_lash_line") for s in "rl"]
    front = project(0, 0, 0)
    assert front[r_eye, 0] < front[l_eye, 0]  # facing us, the person's left eye is on our right
    turned = project(30, 0, 0)  # yaw > 0: turns to their left, the nose moves to our right
    assert turned[nose, 0] - turned[inner].mean(0)[0] > 10
    up = project(0, 20, 0)  # pitch > 0: looks up, the nose tip rises toward the eyes
    assert up[nose, 1] - up[inner].mean(0)[1] < front[nose, 1] - front[inner].mean(0)[1] - 5
    tilted = project(0, 0, 20)  # roll > 0: tilts toward their left shoulder, their left eye drops (clockwise)
    assert tilted[l_eye, 1] - tilted[r_eye, 1] > 10
    for angles in [(35, -20, 10), (-120, 45, -170), (0, 0, 0)]:
        assert rotation_to_angles(angles_to_rotation(*angles)) == pytest.approx(angles, abs=1e-9)


def test_the_landmarks_are_308_face_points_and_mirror_each_other():
    kps = keypoints308()
    rows = face_indices()
    assert len(set(rows)) == len(CANONICAL_FACE) == 11 and all(r in kps.subsets["face"] for r in rows)
    model = canonical_points()
    for i, row in enumerate(rows):  # the mirrored keypoint is a landmark at the mirrored place
        j = rows.index(kps.flip_indices[row])
        np.testing.assert_allclose(model[j], model[i] * [-1, 1, 1])


def test_too_few_or_low_scoring_landmarks_give_no_face():
    kp = keypoints_at(project(10, 5, 0))
    assert fit_keypoints(kp, (H, W)).status == "ok"
    kp[face_indices()[:6], 2] = 0.1  # 5 of 11 left above 0.3
    fit = fit_keypoints(kp, (H, W))
    assert (fit.status, fit.landmarks, fit.yaw) == ("no_face", 5, None) and "5 of 11" in fit.why
    assert fit_keypoints(kp, (H, W), min_landmarks=5).status == "ok"  # 5 points still fit
    assert fit_keypoints(keypoints_at(project(0, 0, 0), score=0.2), (H, W)).status == "no_face"
    back = np.zeros((308, 3))  # seen from behind: no face point scores at all
    assert fit_keypoints(back, (H, W)).landmarks == 0


def test_degenerate_landmarks_give_no_fit():
    same = keypoints_at(np.full((11, 2), 300.0))  # all on one pixel (a network that found nothing)
    assert fit_keypoints(same, (H, W)).status == "no_fit"
    line = keypoints_at(np.stack([np.linspace(100, 300, 11)] * 2, axis=1))
    fit = fit_keypoints(line, (H, W))
    assert fit.status == "no_fit" and fit.error > 0.25 and fit.yaw is None
    scrambled = keypoints_at(np.random.default_rng(1).uniform(200, 300, (11, 2)))
    assert fit_keypoints(scrambled, (H, W)).status == "no_fit"
    assert solve_head_pose(project(0, 0, 0)[:3], canonical_points()[:3], (H, W)) is None  # < 4 points
    with pytest.raises(ValueError, match=r"\(K, 3\) keypoints"):
        fit_keypoints(np.zeros((17, 3)), (H, W))


class FacePredictor:
    """Stand-in keypoint model: the generic face at the top of the given box, turned by a yaw set by where the
    box is across the image (left edge -50, right edge +50 degrees); boxes centred left of `blind` (a
    fraction of the width) get no face (a person seen from behind). Records the boxes it was given."""

    def __init__(self, blind: float = 0.0) -> None:
        self.blind, self.boxes, self.calls = blind, [], 0

    @staticmethod
    def yaw(box, width):
        return ((box[0] + box[2]) / 2 / width - 0.5) * 100

    def __call__(self, images, boxes):
        self.calls += 1
        out = []
        for image, box in zip(images, boxes):
            h, w = image.shape[:2]
            self.boxes.append((np.asarray(box, np.float32).copy(), (h, w)))
            centre = ((box[0] + box[2]) / 2 / w, (box[1] + 0.15 * (box[3] - box[1])) / h)
            pts = project(self.yaw(box, w), 0, 0, (h, w), centre, face_px=0.6 * (box[2] - box[0]))
            out.append(keypoints_at(pts, 0.0 if centre[0] < self.blind else 0.9))
        return out


HEAD_ONLY = CurateConfig(head=HeadConfig(enabled=True), dedup=DedupConfig(deep=False),
                         cluster=ClusterConfig(enabled=False), clip=ClipConfig(enabled=False))


def _curate(corpus, out, config=HEAD_ONLY, predictor=None, **kw):
    predictor = predictor or FacePredictor()
    result = curate(collect_items([str(corpus.root)]), out, config, detector=colour_detector, head=predictor,
                    shards=False, **kw)
    return result, predictor, {r["key"]: r for r in result.table.to_pylist()}


def test_the_stage_measures_the_best_persons_head(corpus, tmp_path):
    result, predictor, rows = _curate(corpus, tmp_path)
    assert result.table.schema == MANIFEST_SCHEMA
    measured = [r for r in rows.values() if r["person_score"] is not None and r["reason"] != "no_person"]
    assert len(measured) == len(predictor.boxes) > 10
    for r in measured:
        box = [r[f"person_{c}"] for c in ("x1", "y1", "x2", "y2")]
        assert r["head_status"] == "ok" and r["face_keypoints"] == 11 and r["head_error"] < 0.01
        assert r["head_yaw"] == pytest.approx(FacePredictor.yaw(box, r["width"]), abs=1.0)
        assert abs(r["head_pitch"]) < 1.0 and abs(r["head_roll"]) < 1.0
    unmeasured = [r for r in rows.values() if r["reason"] in ("decode", "too_small", "no_person")]
    assert all(r["head_yaw"] is None and r["head_status"] is None for r in unmeasured)
    html = (tmp_path / "report" / "index.html").read_text()
    assert "head yaw (degrees)" in html and "head roll (degrees)" in html and "head fit error" in html


def test_no_face_is_kept_unless_required_and_angle_limits_drop(corpus, tmp_path):
    blind = FacePredictor(blind=0.5)
    _, _, rows = _curate(corpus, tmp_path / "a", predictor=blind)
    faceless = [r for r in rows.values() if r["head_status"] == "no_face"]
    assert faceless and all(r["head_yaw"] is None and r["face_keypoints"] == 0 for r in faceless)
    assert not any(r["reason"] in ("no_face", "head_pose") for r in rows.values())  # recorded, not dropped
    config = dataclasses.replace(HEAD_ONLY, head=HeadConfig(enabled=True, require_face=True, max_abs_yaw=20.0))
    _, _, strict = _curate(corpus, tmp_path / "b", config, FacePredictor(blind=0.5))
    for key, r in rows.items():
        if r["head_status"] == "no_face":
            assert strict[key]["reason"] == "no_face" and "0 of 11 face landmarks" in strict[key]["detail"]
        elif r["head_status"] == "ok":
            turned = abs(r["head_yaw"]) > 20
            assert (strict[key]["reason"] == "head_pose") == turned
            assert not turned or "beyond 20 / 90" in strict[key]["detail"]
    assert REASONS.index("no_person") < REASONS.index("no_face") < REASONS.index("head_pose") < REASONS.index(
        "duplicate")


def test_resumed_person_parts_still_hand_their_boxes_to_the_head_stage(corpus, tmp_path):
    first, _, rows = _curate(corpus, tmp_path)
    stricter = dataclasses.replace(HEAD_ONLY, head=HeadConfig(enabled=True, max_abs_yaw=30.0))
    again, predictor, rows2 = _curate(corpus, tmp_path, stricter, resume=True)
    assert "person" not in again.computed and again.computed["head"] >= 1
    assert all(box[2] - box[0] < 0.5 * w for box, (h, w) in predictor.boxes)  # the person's, not the whole image
    assert [r["head_yaw"] for r in rows2.values()] == [r["head_yaw"] for r in rows.values()]
    third, predictor3, _ = _curate(corpus, tmp_path, stricter, resume=True)
    assert predictor3.calls == 0 and "head" not in third.computed


def test_without_the_person_stage_the_whole_image_is_the_box(corpus, tmp_path):
    config = dataclasses.replace(HEAD_ONLY, person=PersonConfig(enabled=False))
    predictor = FacePredictor()
    curate(collect_items([str(p) for p in corpus.originals[:3]]), tmp_path, config, head=predictor, shards=False,
           report=False)
    assert len(predictor.boxes) == 3
    for box, (h, w) in predictor.boxes:
        np.testing.assert_array_equal(box, [0, 0, w - 1, h - 1])


def test_the_person_box_is_stored_in_file_pixels(corpus):
    item = collect_items([str(corpus.originals[0])])
    full = PersonStage(colour_detector)(Batch(item))
    small = PersonStage(colour_detector)(Batch(item, work_side=256))
    for c in ("x1", "y1", "x2", "y2"):
        assert small[f"person_{c}"][0] == pytest.approx(full[f"person_{c}"][0], abs=4.0)
    h, w = cv2.imread(str(corpus.originals[0])).shape[:2]
    area = (full["person_x2"][0] - full["person_x1"][0] + 1) * (full["person_y2"][0] - full["person_y1"][0] + 1)
    assert area / (h * w) == pytest.approx(full["person_area"][0])


def test_pose_keypoints_run_the_pose_predictors_steps_on_the_given_box():
    from sapiens2.tasks.pose import Pose
    from tests.tasks.test_pose import BrightestPixelPose, _photo

    image = _photo(480, 640, [(300, 200)])
    predictor = PoseKeypoints(Pose(BrightestPixelPose(), detector=None, flip_test=False))
    (kp,) = predictor([image], [np.array([250, 120, 380, 330], np.float32)])
    assert kp.shape == (308, 3)
    np.testing.assert_allclose(kp[face_indices(), :2], np.tile([300, 200], (11, 1)), atol=1.0)  # back in the photo
    stage = HeadPoseStage(predictor, HeadConfig(enabled=True))
    assert fit_keypoints(kp, image.shape[:2]).status == "no_fit"  # every landmark on one dot: no face shape
    with pytest.raises(ValueError, match="308-keypoint"):
        PoseKeypoints(Pose(BrightestPixelPose(17), detector=None))
    assert stage.model() is predictor


_BUILDS: list[int] = []


def _face_predictor() -> FacePredictor:
    _BUILDS.append(1)
    return FacePredictor()


def test_a_loader_builds_the_predictor_once_on_first_use_and_pickles_light():
    _BUILDS.clear()
    stage = HeadPoseStage(Loader.of(_face_predictor), HeadConfig(enabled=True))
    light = pickle.loads(pickle.dumps(stage))
    assert _BUILDS == [] and light.predictor == Loader.of(_face_predictor)
    assert stage.model() is stage.model() and _BUILDS == [1]
    with pytest.raises(ValueError, match="needs a keypoint predictor"):
        curate([], "unused", HEAD_ONLY, detector=colour_detector)


def test_the_default_predictor_names_a_missing_checkpoint(tmp_path):
    from sapiens2.fetch import CheckpointNotFoundError

    with pytest.raises(CheckpointNotFoundError, match="no such checkpoint"):
        load_pose_keypoints(str(tmp_path / "pose.safetensors"))
    with pytest.raises(ModelLoadError, match="load_pose_keypoints.*no such checkpoint"):
        HeadPoseStage(Loader.of(load_pose_keypoints, str(tmp_path / "pose.safetensors"))).model()


def test_head_defaults():
    head = CurateConfig().head
    assert (head.enabled, head.model, head.min_landmarks, head.require_face) == (False, "sapiens2-pose-0.4b", 6, False)
    assert (head.max_abs_yaw, head.max_abs_pitch) == (180.0, 90.0)  # no filtering


NO_MODELS_BUT_HEAD = ("[person]\nenabled = false\n[clip]\nenabled = false\n[dedup]\ndeep = false\n"
                      "[cluster]\nenabled = false\n[head]\nenabled = true\n")


def test_the_command_runs_the_head_stage(corpus, tmp_path, monkeypatch, capsys):
    from sapiens2 import hub
    from sapiens2.cli import main
    from sapiens2.curate import headpose

    got = []

    def fake_load(model, device="cpu", flip_test=True):
        got.append((model, device, flip_test))
        return FacePredictor()

    monkeypatch.setattr(headpose, "load_pose_keypoints", fake_load)
    monkeypatch.setattr(hub, "resolve", lambda name, *a, **k: (tmp_path / f"{name}.safetensors", None))
    cfg = tmp_path / "c.toml"
    cfg.write_text(NO_MODELS_BUT_HEAD + "flip_test = false\n")
    out = tmp_path / "out"
    assert main(["curate", *map(str, corpus.originals[:2]), "--out", str(out), "--config", str(cfg), "--no-shards",
                 "--device", "cpu"]) == 0
    assert got == [(str(tmp_path / "sapiens2-pose-0.4b.safetensors"), "cpu", False)]  # built once, on first use
    table = pq.read_table(out / "manifest.parquet")
    assert table["head_status"].to_pylist() == ["ok", "ok"] and table["head_yaw"].null_count == 0


def test_the_command_without_pose_weights_says_what_to_download(corpus, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import sapiens2

    cfg = tmp_path / "c.toml"
    cfg.write_text(NO_MODELS_BUT_HEAD)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "SAPIENS_CHECKPOINT_ROOT": str(tmp_path / "none"),
           "PYTHONPATH": str(Path(sapiens2.__file__).resolve().parents[1])}
    code = (f"from sapiens2.cli import main; raise SystemExit(main(['curate', {str(corpus.originals[0])!r}, "
            f"'--out', 'o', '--config', {str(cfg)!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "sapiens2 download sapiens2-pose-0.4b" in proc.stderr and "Traceback" not in proc.stderr
