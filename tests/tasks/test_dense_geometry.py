"""Photo -> network input -> photo: the placement rules and exact un-padding, checked with stand-in networks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sapiens2.io.images import as_image
from sapiens2.tasks import Albedo, Normals, Pointmap
from sapiens2.tasks.resize import (
    MEAN_RGB,
    STD_RGB,
    gaussian_blur3,
    normalize,
    pad_placement,
    place,
    stretch_placement,
    to_source_smooth,
)
from tests.conftest import random_photo
from tests.tasks._dense_tiny import SMALL_INPUT, Coordinates, Identity

ODD_SIZES = [(333, 517), (517, 333)]


@pytest.mark.parametrize("source", [(333, 517), (517, 333), (1024, 768), (100, 100), (2000, 301)])
def test_pad_placement_follows_the_reference_arithmetic(source):
    h, w = source
    s = min(768 / w, 1024 / h)
    nw, nh = int(w * s), int(h * s)
    p = pad_placement(source, (1024, 768))
    assert p.size == (nh, nw)
    left, right, top, bottom = p.pad
    assert (left, top) == ((768 - nw) // 2, (1024 - nh) // 2)
    assert left + nw + right == 768 and top + nh + bottom == 1024
    assert p.interpolation == cv2.INTER_LINEAR


def test_stretch_interpolation_depends_on_the_width_only():
    assert stretch_placement((2000, 1000), (1024, 768)).interpolation == cv2.INTER_AREA
    assert stretch_placement((500, 700), (1024, 768)).interpolation == cv2.INTER_CUBIC  # taller, but narrower input
    assert stretch_placement((500, 400), (1024, 768), "linear").interpolation == cv2.INTER_LINEAR
    assert stretch_placement((500, 400), (1024, 768)).size == (1024, 768)


@pytest.mark.parametrize("policy", ["pad", "stretch-cubic", "stretch-area", "stretch-linear"])
def test_resizing_rgb_equals_resizing_bgr_then_flipping(policy):
    size = (70, 90) if policy == "stretch-area" else (33, 21)
    img = random_photo(*size, seed=1)
    if policy == "pad":
        where = pad_placement(size, (64, 48))
    else:
        where = stretch_placement(size, (64, 48), "linear" if policy == "stretch-linear" else "cubic")
    rgb = place(img, where)
    bgr = place(np.ascontiguousarray(img[..., ::-1]), where)
    np.testing.assert_array_equal(rgb, bgr[..., ::-1])
    assert rgb.shape == (64, 48, 3)


def test_saved_normals_have_unit_length_after_resizing_unless_asked_to_match_the_reference():
    img = random_photo(37, 23, seed=3)  # enlarged onto the photo: bilinear mixing shortens the vectors
    raw = Normals(Identity("normal"), input_size=SMALL_INPUT, renormalize=False)(img).normals
    unit = Normals(Identity("normal"), input_size=SMALL_INPUT)(img).normals
    assert np.linalg.norm(raw, axis=-1).min() < 0.99
    np.testing.assert_allclose(np.linalg.norm(unit, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=-1, keepdims=True), atol=1e-6)


def test_padding_is_zero_before_normalisation():
    where = pad_placement((64, 30), (64, 48))
    x = place(np.full((64, 30, 3), 200, np.uint8), where)
    assert where.pad == (9, 9, 0, 0)
    assert (x[:, :9] == 0).all() and (x[:, -9:] == 0).all() and (x[:, 9:39] == 200).all()
    t = normalize(x[None])
    expected_pad = -torch.tensor(MEAN_RGB) / torch.tensor(STD_RGB)
    torch.testing.assert_close(t[0, :, 0, 0], expected_pad)


def test_unpadding_is_exact_when_no_resampling_is_needed():
    # 64 x 30 fits a 64 x 48 input at scale 1: the crop must give the photo back pixel for pixel.
    img = random_photo(64, 30, seed=2)
    out = Normals(Identity("normal"), input_size=SMALL_INPUT, renormalize=False)(img).normals
    expected = F.normalize(normalize(img[None]), dim=1, eps=1e-8)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(out, expected)
    albedo = Albedo(Identity("albedo"), input_size=SMALL_INPUT)(img).albedo
    np.testing.assert_array_equal(albedo, normalize(img[None]).clamp(0, 1)[0].permute(1, 2, 0).numpy())


def _expected_coordinate(n_out: int, n_in: int, offset: int) -> np.ndarray:
    """Bilinear (align_corners False) resize of the ramp offset + [0, n_in) to n_out samples."""
    src = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    return offset + np.clip(src, 0, n_in - 1)


def _check_coordinates(size, input_size, margin):
    h, w = size
    result = Pointmap(Coordinates(), input_size=input_size)(random_photo(h, w))
    (nh, nw), (left, _, top, _) = result.placement.size, result.placement.pad
    assert result.points.shape == (h, w, 3)
    rows, cols = _expected_coordinate(h, nh, top), _expected_coordinate(w, nw, left)
    # The blur before enlarging leaves a ramp unchanged except within 4 pixels of the crop's edges.
    keep_r = (rows >= top + margin) & (rows <= top + nh - 1 - margin)
    keep_c = (cols >= left + margin) & (cols <= left + nw - 1 - margin)
    assert keep_r.sum() > h // 2 and keep_c.sum() > w // 2
    np.testing.assert_allclose(result.points[keep_r, 0, 0], rows[keep_r], atol=1e-3)
    np.testing.assert_allclose(result.points[0, keep_c, 1], cols[keep_c], atol=1e-3)
    assert np.ptp(result.points[..., 0], axis=1).max() < 1e-4  # rows do not vary along a row
    assert np.ptp(result.points[..., 1], axis=0).max() < 1e-4


@pytest.mark.parametrize("size", ODD_SIZES)
def test_crop_and_resize_map_each_photo_pixel_to_its_network_pixel(size):
    # The stand-in returns each input pixel's (row, column): a misplaced crop or a swapped axis shows at once.
    _check_coordinates(size, SMALL_INPUT, margin=4)


@pytest.mark.parametrize("size", [(37, 25), (25, 37)])
def test_crop_and_shrink_is_exact_everywhere(size):
    _check_coordinates(size, (128, 96), margin=0)  # the crop is larger than the photo: no blur


def test_blur_is_applied_only_when_the_map_is_enlarged():
    maps = torch.rand(1, 3, 64, 48)
    where_big = pad_placement((640, 400), (64, 48))  # the photo is larger than the crop: blurred first
    crop = maps[..., where_big.content[0], where_big.content[1]]
    blurred = crop.numpy()[0].transpose(1, 2, 0).copy()
    for _ in range(4):
        blurred = cv2.GaussianBlur(blurred, (3, 3), 0.8, borderType=cv2.BORDER_REFLECT_101)
    expected = F.interpolate(torch.from_numpy(blurred.transpose(2, 0, 1))[None], size=(640, 400), mode="bilinear",
                             align_corners=False)
    torch.testing.assert_close(to_source_smooth(maps, where_big), expected, atol=1e-5, rtol=1e-5)
    where_small = pad_placement((20, 12), (64, 48))
    crop = maps[..., where_small.content[0], where_small.content[1]]
    plain = F.interpolate(crop, size=(20, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(to_source_smooth(maps, where_small), plain)


def test_gaussian_blur_matches_opencv_reflect101():
    x = torch.rand(2, 3, 9, 7)
    ours = gaussian_blur3(x, 0.8)
    ref = np.stack([cv2.GaussianBlur(x[i].numpy().transpose(1, 2, 0), (3, 3), 0.8,
                                     borderType=cv2.BORDER_REFLECT_101).transpose(2, 0, 1) for i in range(2)])
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-6)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((10, 10), np.uint8), "2-D"),
    (np.zeros((10, 10, 3), np.float32), "uint8"),
    (np.zeros((10, 10, 4), np.uint8), "alpha"),
    (np.zeros((0, 10, 3), np.uint8), "empty"),
])
def test_bad_images_are_refused_clearly(bad, message):
    with pytest.raises(ValueError, match=message):
        as_image(bad)


def test_bad_calls_are_refused_clearly():
    predictor = Normals(Identity("normal"), input_size=SMALL_INPUT)
    with pytest.raises(ValueError, match="empty list"):
        predictor([])
    with pytest.raises(TypeError, match="torch tensors"):
        predictor(torch.zeros(10, 10, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="batch_size"):
        Normals(Identity("normal"), batch_size=0)
    with pytest.raises(ValueError, match="'normal' model, not 'albedo'"):
        Albedo(Identity("normal"))
