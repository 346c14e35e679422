"""`sapiens2.Pose`: boxes, batching, flip test and the geometry from image to keypoints and back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import sapiens2
from sapiens2.keypoints.udp import udp_encode
from sapiens2.models import BackboneConfig, PoseHeadConfig, build_model
from sapiens2.tasks.pose import Pose


class BrightestPixelPose(nn.Module):
    """A stand-in pose network: every keypoint's heatmap peaks at the centre of the crop's red dot.

    So a keypoint must come back exactly where a dot was drawn in the photo, through crop -> normalize ->
    heatmaps -> UDP decode -> image coordinates; a flipped axis or a misplaced crop shows at once.
    """

    task = "pose"

    def __init__(self, keypoints: int = 308) -> None:
        super().__init__()
        self.decode_head = nn.Module()
        self.decode_head.conv_pose = nn.Conv2d(1, keypoints, 1)
        self.keypoints = keypoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for crop in x:
            red = (crop[0] - crop[1]).clamp(min=0)
            red = torch.where(red > 0.5 * red.max(), red, torch.zeros_like(red))
            ys, xs = torch.meshgrid(torch.arange(red.shape[0]), torch.arange(red.shape[1]), indexing="ij")
            centroid = [float((xs * red).sum() / red.sum()), float((ys * red).sum() / red.sum())]
            kp = np.tile(np.array([centroid], np.float32), (1, self.keypoints, 1))
            h, w = red.shape
            heat, _ = udp_encode(kp, np.ones((1, self.keypoints), np.float32), input_size=(h, w),
                                 heatmap_size=(h // 4, w // 4))
            out.append(torch.from_numpy(heat))
        return torch.stack(out).to(x.dtype)


def _photo(h: int, w: int, dots: list[tuple[int, int]]) -> np.ndarray:
    img = np.full((h, w, 3), 40, np.uint8)
    for x, y in dots:
        cv2.circle(img, (x, y), 2, (255, 0, 0), -1)
    return img


@pytest.mark.parametrize("flip", [False, True])
def test_a_dot_comes_back_where_it_was_drawn(flip):
    img = _photo(480, 640, [(300, 200)])
    pose = Pose(BrightestPixelPose(), detector=None, flip_test=flip)
    result = pose(img, boxes=[[250, 120, 380, 330]])
    assert result.box_source == "given" and len(result.people) == 1
    np.testing.assert_allclose(result.people[0].keypoints[0], [300, 200], atol=1.0)
    assert result.people[0].keypoints.shape == (308, 2) and result.names[0] == "nose"


def test_other_crop_sizes_and_v1_models_trained_at_them():
    img = _photo(480, 640, [(300, 200)])
    pose = Pose(BrightestPixelPose(), detector=None, input_size=(256, 192))
    assert pose.input_size == (256, 192)
    result = pose(img, boxes=[[250, 120, 380, 330]])
    np.testing.assert_allclose(result.people[0].keypoints[0], [300, 200], atol=2.0)
    with pytest.raises(ValueError, match="multiples of 4"):
        Pose(BrightestPixelPose(), detector=None, input_size=(255, 192))
    from sapiens2.models.sapiens1 import Sapiens1Config, V1HeadConfig, build_sapiens1

    v1 = build_sapiens1(Sapiens1Config(32, 1, 1, patch_padding=2, pos_grid=(8, 6)), "pose",
                        V1HeadConfig(32, (8, 8), (8,), 17)).eval()
    pose = Pose(v1, detector=None)
    assert pose.input_size == (128, 96)  # the grid its positions were trained for
    assert pose(img).people[0].keypoints.shape == (17, 2)


def test_batch_of_images_with_zero_one_and_many_people():
    dots = [(100, 100), (400, 300), (560, 60)]
    images = [_photo(480, 640, dots), _photo(360, 500, [(250, 180)]), _photo(300, 300, [])]
    boxes = {0: [[60, 50, 150, 170, 0.9], [330, 220, 470, 400, 0.8], [520, 10, 610, 130, 0.7]],
             1: [[200, 100, 300, 260, 0.95]], 2: []}
    calls = iter(range(3))

    def detector(image):
        return boxes[next(calls)]

    pose = Pose(BrightestPixelPose(17), detector=detector, batch_size=2)
    results = pose(images)
    assert [len(r.people) for r in results] == [3, 1, 1]
    assert [r.box_source for r in results] == ["detector", "detector", "whole image (nobody detected)"]
    for person, dot in zip(results[0].people, dots):
        np.testing.assert_allclose(person.keypoints[5], dot, atol=1.0)
    np.testing.assert_allclose(results[1].people[0].keypoints[0], (250, 180), atol=1.0)
    np.testing.assert_allclose(results[2].people[0].box, [0, 0, 299, 299])
    assert results[0].keypoints().shape == (3, 17, 3) and results[0].boxes()[:, 4].tolist() == pytest.approx([0.9, 0.8, 0.7])


def test_whole_image_mode_is_flagged():
    result = Pose(BrightestPixelPose(17), detector=None)(_photo(200, 100, [(50, 120)]))
    assert result.box_source == "whole image" and len(result.people) == 1
    np.testing.assert_allclose(result.people[0].keypoints[0], (50, 120), atol=1.0)


def test_tiny_sapiens2_network_end_to_end(tmp_path):
    torch.manual_seed(0)
    net = build_model(BackboneConfig(embed_dim=32, depth=2, num_heads=2), "pose",
                      PoseHeadConfig(32, (16, 16), conv_channels=(16, 16, 8)))
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), _photo(120, 90, [(40, 50)])[..., ::-1])
    result = Pose(net, detector=None)(str(path))
    assert result.path == path and result.image_size == (120, 90)
    assert result.keypoints().shape == (1, 308, 3) and np.isfinite(result.keypoints()).all()
    coco = result.convert("coco17")
    assert coco.keypoints.shape == (1, 17, 2)


def test_bad_inputs_are_named():
    pose = Pose(BrightestPixelPose(17), detector=None)
    with pytest.raises(ValueError, match="x2 > x1"):
        pose(_photo(50, 50, []), boxes=[[30, 10, 20, 40]])
    with pytest.raises(ValueError, match="2 images but 1 box lists"):
        pose([_photo(50, 50, []), _photo(50, 50, [])], boxes=[[[0, 0, 10, 10]]])
    with pytest.raises(ValueError, match="H x W x 3 uint8 RGB"):
        pose(np.zeros((50, 50), np.float32))
    with pytest.raises(ValueError, match="unknown detector"):
        Pose(BrightestPixelPose(17), detector="yolo")
    with pytest.raises(ValueError, match="not 'pose'"):
        Pose(build_model(BackboneConfig(embed_dim=32, depth=2, num_heads=2), "pretrain"), detector=None)


def test_default_detector_offline_says_how_to_get_it(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("SAPIENS_CHECKPOINT_ROOT", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(sapiens2.CheckpointNotFoundError,
                       match="(?s)rtmdet-m-person.*facebook/sapiens-pose-bbox-detector.*sapiens2 download rtmdet-m-person"):
        Pose(BrightestPixelPose(17))


def test_coco_detections_json(tmp_path):
    import json

    from sapiens2.tasks.pose import read_coco_detections

    dets = [{"image_id": 3, "bbox": [10, 20, 30, 40], "score": 0.9, "category_id": 1},
            {"image_id": 3, "bbox": [0, 0, 5, 5], "score": 0.1, "category_id": 1},
            {"image_id": 4, "bbox": [1, 2, 3, 4], "score": 0.8, "category_id": 2},
            {"image_id": 5, "bbox": [1, 1, 2, 2]}]
    (tmp_path / "d.json").write_text(json.dumps(dets))
    boxes = read_coco_detections(tmp_path / "d.json", score_threshold=0.5)
    assert set(boxes) == {3, 5}
    np.testing.assert_allclose(boxes[3], [[10, 20, 40, 60, 0.9]])
    (tmp_path / "bad.json").write_text(json.dumps([{"image_id": 1}]))
    with pytest.raises(ValueError, match=r"bad\.json: detection 0 lacks a valid 'bbox'"):
        read_coco_detections(tmp_path / "bad.json")


def test_builtin_detector_gets_the_whole_batch_at_once():
    from sapiens2.detect import PersonDetector, RTMDet, RTMDetConfig

    calls = []

    class Recording(PersonDetector):
        def __call__(self, images, channel_order="RGB"):
            calls.append(len(images))
            return [np.zeros((0, 5), np.float32) for _ in images]

    det = Recording(RTMDet(RTMDetConfig.tiny()))
    results = Pose(BrightestPixelPose(17), detector=det)([_photo(60, 40, [(10, 10)])] * 3)
    assert calls == [3] and all(r.box_source == "whole image (nobody detected)" for r in results)
