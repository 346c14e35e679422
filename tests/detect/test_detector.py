"""PersonDetector end to end: file -> model, images in (RGB by default), person boxes in image pixels out."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from sapiens2.detect import DETECTOR_FILENAME, DETECTOR_HUB_REPO, MMDET_TEST_SETTINGS, PersonDetector
from sapiens2.detect.boxes import box_iou
from tests.detect.conftest import FixtureCase

FIXTURE_SETTINGS = replace(MMDET_TEST_SETTINGS, input_size=320)
# Detections inherit the float32 noise of the forward pass (see test_rtmdet): boxes agree to ~0.02 px and
# scores to ~1e-4 with mmdet's; the bounds below leave a few times that.
BOX_ATOL = 0.1
SCORE_ATOL = 5e-4


@pytest.fixture(scope="module")
def detector(topology_case: FixtureCase) -> PersonDetector:
    return PersonDetector.from_file(topology_case.weights_path, settings=FIXTURE_SETTINGS)


@pytest.fixture(scope="module")
def image_rgb(topology_case: FixtureCase) -> np.ndarray:
    return np.ascontiguousarray(topology_case.inputs["image_bgr_uint8"].numpy()[:, :, ::-1])


def test_hub_names():
    assert DETECTOR_HUB_REPO == "facebook/sapiens-pose-bbox-detector"
    assert DETECTOR_FILENAME == "rtmdet_m_8xb32-100e_coco-obj365-person-235e8209.pth"


def test_end_to_end_reproduces_mmdet_detections(fixture_case: FixtureCase):
    det = PersonDetector.from_file(fixture_case.weights_path, settings=FIXTURE_SETTINGS)
    ours = det.detect_raw([fixture_case.inputs["image_bgr_uint8"].numpy()], channel_order="BGR")[0]
    ref_boxes, ref_scores = fixture_case.expected["det_bboxes"], fixture_case.expected["det_scores"]
    assert len(ours) == len(ref_boxes) == 300
    torch.testing.assert_close(ours.scores, ref_scores, atol=SCORE_ATOL, rtol=0)
    # Every mmdet detection has a counterpart (near-equal scores may swap places, so match, don't zip).
    box_gap = (ours.boxes[:, None] - ref_boxes[None]).abs().amax(-1)
    score_gap = (ours.scores[:, None] - ref_scores[None]).abs()
    matched = ((box_gap <= BOX_ATOL) & (score_gap <= SCORE_ATOL)).any(0)
    assert matched.all(), f"{(~matched).sum()} of mmdet's detections have no counterpart"


def test_rgb_default_equals_bgr_with_channel_order(detector: PersonDetector, image_rgb: np.ndarray):
    from_rgb = detector(image_rgb)
    from_bgr = detector(np.ascontiguousarray(image_rgb[:, :, ::-1]), channel_order="BGR")
    np.testing.assert_array_equal(from_rgb, from_bgr)
    # Feeding BGR as if it were RGB really is a different input.
    assert not np.array_equal(detector(image_rgb[:, :, ::-1].copy()), from_rgb)


def test_output_format_and_sapiens_filter(detector: PersonDetector, image_rgb: np.ndarray):
    people = detector(image_rgb)
    assert isinstance(people, np.ndarray) and people.dtype == np.float32 and people.shape[1] == 5
    assert len(people) > 0
    assert (people[:, 4] > 0.3).all() and (np.diff(people[:, 4]) <= 0).all()
    boxes = torch.from_numpy(people[:, :4])
    overlap = box_iou(boxes, boxes, offset=1.0).fill_diagonal_(0)
    assert overlap.max() <= 0.3
    raw = detector.detect_raw([image_rgb])[0]
    assert len(raw) > len(people)  # the filter did remove something


def test_batch_equals_one_by_one(detector: PersonDetector, image_rgb: np.ndarray):
    other = np.ascontiguousarray(np.rot90(image_rgb)[:150])  # a different size and content
    batched = detector([image_rgb, other])
    assert isinstance(batched, list) and len(batched) == 2
    stacked = detector(np.stack([image_rgb, image_rgb]))  # an N x H x W x 3 array is a batch too
    assert isinstance(stacked, list) and len(stacked) == 2
    np.testing.assert_array_equal(stacked[0], stacked[1])
    for image, result in zip([image_rgb, other], batched):
        single = detector(image)
        assert single.shape == result.shape
        # Float32 noise of batched convs (and of weight alignment) may swap boxes of near-equal score, and on
        # random weights (over a hundred overlapping boxes near the thresholds) tip an NMS decision or two, so
        # the two results are compared as sets: nearly every box of each has a match in the other.
        _assert_same_boxes(result, single)


def _assert_same_boxes(a: np.ndarray, b: np.ndarray, at_least: float = 0.97) -> None:
    gap = np.abs(a[:, None, :] - b[None, :, :]).max(-1)
    assert (gap.min(1) <= BOX_ATOL).mean() >= at_least and (gap.min(0) <= BOX_ATOL).mean() >= at_least


class _OneBoxHead(torch.nn.Module):
    """Stands in for RTMDet: every image gets one confident point at stride 16, row 5, column 7, i.e.
    anchor (112, 80) on the canvas, with distances (30, 20, 50, 60): canvas box (82, 60, 162, 140)."""

    strides = (8, 16, 32)

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the detector a device and dtype

    def forward(self, x: torch.Tensor):
        n, _, h, w = x.shape
        cls = [torch.full((n, 1, h // s, w // s), -20.0) for s in self.strides]
        reg = [torch.ones(n, 4, h // s, w // s) for s in self.strides]
        cls[1][:, 0, 5, 7] = 4.0
        reg[1][:, :, 5, 7] = torch.tensor([30.0, 20.0, 50.0, 60.0])
        return cls, reg


@pytest.mark.parametrize("hw", [(256, 400), (400, 256), (1000, 1500), (100, 100)])
def test_known_canvas_box_comes_back_in_original_image_pixels(hw):
    h, w = hw
    det = PersonDetector(_OneBoxHead(), replace(FIXTURE_SETTINGS, input_size=320))
    people = det(np.zeros((h, w, 3), np.uint8))
    # The canvas holds the image resized to (rh, rw), rounded half up; x and y scale back separately.
    rh, rw = (int(side * 320 / max(h, w) + 0.5) for side in (h, w))
    sx, sy = w / rw, h / rh
    expected = [82 * sx, 60 * sy, 162 * sx, 140 * sy, float(torch.sigmoid(torch.tensor(4.0)))]
    np.testing.assert_allclose(people, [expected], rtol=1e-6)


def test_default_settings_run_at_640(topology_case: FixtureCase, image_rgb: np.ndarray):
    det = PersonDetector.from_file(topology_case.weights_path, device="cpu")
    assert det.settings.input_size == 640 and det.settings.iou_threshold is None
    assert det.settings.score_thr == 0.05 and det.settings.nms_pre == 1000 and det.settings.max_per_img == 100
    raw = det.detect_raw([image_rgb])[0]
    assert len(raw) <= 100 and (raw.scores > 0.05).all()
    assert det.device == torch.device("cpu")
    small = det.with_settings(input_size=320)
    assert small.model is det.model and small.settings.input_size == 320 and small.settings.score_thr == 0.05


def test_fallback_to_the_full_image(detector: PersonDetector, image_rgb: np.ndarray):
    strict = PersonDetector(detector.model, detector.settings, score_threshold=1.0)
    assert strict(image_rgb).shape == (0, 5)
    fallback = PersonDetector(detector.model, detector.settings, score_threshold=1.0, fallback_full_image=True)
    h, w = image_rgb.shape[:2]
    assert fallback(image_rgb).tolist() == [[0.0, 0.0, w - 1.0, h - 1.0, 1.0]]


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8),
                                 np.zeros((8, 8, 3), np.float32)])
def test_rejects_non_rgb_uint8_images(detector: PersonDetector, bad):
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        detector([bad])


def test_rejects_unknown_channel_order(detector: PersonDetector, image_rgb: np.ndarray):
    with pytest.raises(ValueError, match="channel_order"):
        detector(image_rgb, channel_order="RGBA")
