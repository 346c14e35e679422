"""Pre- and post-processing: letterbox geometry, decoding hand-set head outputs, mmdet's golden detections."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sapiens2.detect.pipeline import (
    BGR_MEAN,
    BGR_STD,
    MMDET_TEST_SETTINGS,
    PAD_VALUE,
    DetectionSettings,
    Detections,
    Letterbox,
    decode,
    filter_people,
    finish,
    grid_points,
    letterbox,
    normalize_bgr,
)
from tests.detect.conftest import FixtureCase

STRIDES = (8, 16, 32)


# ----------------------------------------------------------------------------- letterbox and normalization


def test_preprocessing_reproduces_mmdet_input_bit_exactly(fixture_case: FixtureCase):
    canvas, box = letterbox(fixture_case.inputs["image_bgr_uint8"].numpy(), 320)
    assert box == Letterbox(orig_hw=(256, 400), resized_hw=(205, 320), canvas=320)
    assert box.scale_xy == (0.8, 0.80078125)
    assert torch.equal(normalize_bgr(canvas[None]), fixture_case.inputs["input"])


@pytest.mark.parametrize("hw", [(256, 400), (400, 256), (640, 640), (100, 30), (1000, 1001), (3, 2000)])
def test_letterbox_resizes_long_side_to_canvas_and_pads_bottom_right(hw):
    h, w = hw
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    canvas, box = letterbox(image, 640)
    rh, rw = box.resized_hw
    assert canvas.shape == (640, 640, 3) and max(rh, rw) == 640  # small images are enlarged too
    assert (rh, rw) == (int(h * 640 / max(h, w) + 0.5), int(w * 640 / max(h, w) + 0.5))
    assert (canvas[rh:] == PAD_VALUE).all() and (canvas[:, rw:] == PAD_VALUE).all()


def test_letterbox_puts_image_content_where_the_box_mapping_says():
    image = np.zeros((300, 500, 3), np.uint8)
    image[60:180, 100:250] = 255  # a white block: x in [100, 250), y in [60, 180)
    canvas, box = letterbox(image, 640)
    x1, y1, x2, y2 = box.to_canvas(torch.tensor([[100.0, 60.0, 250.0, 180.0]]))[0].tolist()
    ys, xs = np.nonzero(canvas[:, :, 0] > 127)
    assert abs(xs.min() - x1) <= 1 and abs(xs.max() + 1 - x2) <= 1
    assert abs(ys.min() - y1) <= 1 and abs(ys.max() + 1 - y2) <= 1


@pytest.mark.parametrize("hw", [(256, 400), (205, 333), (1080, 1920), (7, 3), (640, 480)])
def test_letterbox_round_trip_is_exact(hw):
    box = letterbox(np.zeros((*hw, 3), np.uint8), 640)[1]
    rh, rw = box.resized_hw
    # The resized image's corners map exactly onto the original image's corners ...
    corners = box.to_original(torch.tensor([[0.0, 0.0, rw, rh]]))
    assert corners.tolist() == [[0.0, 0.0, float(hw[1]), float(hw[0])]]
    # ... and boxes survive original -> canvas -> original unchanged (canvas kept in float64).
    rng = np.random.default_rng(1)
    boxes = torch.from_numpy(rng.uniform(-50, 2 * max(hw), (500, 4)).astype(np.float32))
    back = box.to_original(box.to_canvas(boxes.double())).float()
    assert torch.equal(back, boxes)


def test_normalization_is_bgr_mean_std_and_pads_become_nonzero():
    canvas = np.full((1, 2, 2, 3), PAD_VALUE, np.uint8)
    x = normalize_bgr(canvas)
    expected = [(PAD_VALUE - m) / s for m, s in zip(BGR_MEAN, BGR_STD)]
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor(expected))


def test_letterbox_rejects_non_images():
    with pytest.raises(ValueError):
        letterbox(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError):
        letterbox(np.zeros((10, 10, 3), np.float32))


# ----------------------------------------------------------------------------- decoding


def _blank_outputs(canvas: int, logit: float = -20.0):
    cls = [torch.full((1, 1, canvas // s, canvas // s), logit) for s in STRIDES]
    reg = [torch.ones(1, 4, canvas // s, canvas // s) for s in STRIDES]
    return cls, reg


def test_grid_points_are_cell_corners_row_major():
    pts = grid_points(2, 3, 16)
    assert pts.tolist() == [[0, 0], [16, 0], [32, 0], [0, 16], [16, 16], [32, 16]]


def test_hand_set_head_output_decodes_to_the_known_box():
    cls, reg = _blank_outputs(320)
    # Stride 16, row 5, column 7: anchor point (112, 80). Distances l, t, r, b = 30, 20, 50, 60.
    cls[1][0, 0, 5, 7] = 2.0
    reg[1][0, :, 5, 7] = torch.tensor([30.0, 20.0, 50.0, 60.0])
    det = decode(cls, reg, STRIDES, (320, 320), score_thr=0.05, nms_pre=1000)[0]
    assert det.boxes.tolist() == [[82.0, 60.0, 162.0, 140.0]]
    torch.testing.assert_close(det.scores, torch.sigmoid(torch.tensor([2.0])))
    assert det.labels.tolist() == [0]


def test_decoded_boxes_clip_to_the_padded_canvas_then_map_to_the_original():
    cls, reg = _blank_outputs(320)
    cls[2][0, 0, 9, 9] = 3.0  # stride 32, point (288, 288), box runs past the canvas
    reg[2][0, :, 9, 9] = torch.tensor([100.0, 10.0, 100.0, 100.0])
    box = Letterbox(orig_hw=(256, 400), resized_hw=(205, 320), canvas=320)
    det = decode(cls, reg, STRIDES, (320, 320), 0.05, 1000)[0]
    assert det.boxes.tolist() == [[188.0, 278.0, 320.0, 320.0]]  # clipped to the canvas, not the image
    out = finish(det, DetectionSettings(320), box)
    torch.testing.assert_close(out.boxes, torch.tensor([[235.0, 278 * 256 / 205, 400.0, 320 * 256 / 205]]))


def test_score_threshold_nms_pre_and_max_per_image():
    cls, reg = _blank_outputs(64)
    cls[0][0, 0] = torch.linspace(-3, 3, 64).view(8, 8)
    det = decode(cls, reg, STRIDES, (64, 64), score_thr=0.5, nms_pre=10)[0]
    assert len(det) == 10 and (det.scores > 0.5).all()
    assert torch.equal(det.scores, det.scores.sort(descending=True).values)
    capped = finish(det, DetectionSettings(64, max_per_img=4), None)
    assert len(capped) == 4


def test_zero_size_boxes_are_dropped():
    det = Detections(torch.tensor([[0.0, 0, 0, 5], [1, 1, 4, 4]]), torch.tensor([0.9, 0.8]), torch.tensor([0, 0]))
    assert finish(det, DetectionSettings(), None).boxes.tolist() == [[1.0, 1.0, 4.0, 4.0]]


def test_decode_handles_no_candidates_and_batches():
    cls, reg = _blank_outputs(64)
    cls = [torch.cat([c, c]) for c in cls]
    reg = [torch.cat([r, r]) for r in reg]
    dets = decode(cls, reg, STRIDES, (64, 64), 0.05, 1000)
    assert len(dets) == 2 and all(len(finish(d, DetectionSettings(), None)) == 0 for d in dets)


# ----------------------------------------------------------------------------- mmdet's golden detections


@pytest.mark.parametrize("rescale", [True, False], ids=["original_pixels", "input_pixels"])
def test_postprocessing_of_mmdet_head_outputs_reproduces_mmdet_detections(fixture_case: FixtureCase, rescale):
    exp = fixture_case.expected
    box = letterbox(fixture_case.inputs["image_bgr_uint8"].numpy(), 320)[1]
    cls = [exp[f"output_cls_{i}"] for i in range(3)]
    reg = [exp[f"output_reg_{i}"] for i in range(3)]
    s = MMDET_TEST_SETTINGS
    det = finish(decode(cls, reg, STRIDES, (320, 320), s.score_thr, s.nms_pre)[0], s, box if rescale else None)
    suffix = "" if rescale else "_input_space"
    assert torch.equal(det.scores, exp[f"det_scores{suffix}"])  # same candidates, same order
    assert (det.labels == exp["det_labels"]).all()
    if rescale:
        # mmdet multiplies by a float32 reciprocal of the scale, we by the exact float64 ratio: <= 1 ulp.
        torch.testing.assert_close(det.boxes, exp["det_bboxes"], atol=0, rtol=2**-23)
    else:
        assert torch.equal(det.boxes, exp["det_bboxes_input_space"])


# ----------------------------------------------------------------------------- the Sapiens filter


def test_filter_people_keeps_confident_boxes_and_uses_pixel_inclusive_nms():
    boxes = torch.tensor([[0.0, 0, 9, 9], [6.0, 0, 15, 9], [50, 50, 80, 90], [0, 0, 5, 5]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.2])
    det = Detections(boxes, scores, torch.zeros(4, dtype=torch.long))
    # Boxes 0 and 1: 4 x 10 shared pixels of 100 + 100 - 40 -> IoU 1/4 with +1 areas (2/7 without).
    assert filter_people(det, 0.3, 0.3).scores.tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert filter_people(det, 0.3, 0.2).scores.tolist() == pytest.approx([0.9, 0.7])
    assert filter_people(det, 0.75, 0.3).scores.tolist() == pytest.approx([0.9, 0.8])


def test_full_image_fallback_box():
    from sapiens2.keypoints.topdown import whole_image_box

    assert whole_image_box(480, 640).tolist() == [[0.0, 0.0, 639.0, 479.0, 1.0]]
