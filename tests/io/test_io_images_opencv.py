"""`read_image` gives exactly what the reference reads, ``cv2.imread(path)`` flipped BGR -> RGB, for the
unusual files a photo folder holds: alpha, 16-bit, CMYK, palettes, EXIF rotation."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from sapiens2.io import read_image

RNG = np.random.default_rng(0)
RGBA8 = RNG.integers(0, 256, (19, 23, 4), dtype=np.uint8)
DEEP = RNG.integers(0, 65536, (19, 23, 4), dtype=np.uint16)


def pil_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def cv2_bytes(ext: str, a: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, a)
    assert ok
    return buf.tobytes()


def palette_png(transparency: bool) -> bytes:
    img = Image.fromarray(RGBA8[..., 0] % 4, "P")
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 99, 199])
    return pil_bytes(img, "PNG", **({"transparency": 1} if transparency else {}))


def rotated_jpeg() -> bytes:
    img = Image.fromarray(RGBA8[..., :3])
    exif = img.getexif()
    exif[0x0112] = 6
    return pil_bytes(img, "JPEG", quality=90, exif=exif.tobytes())


CASES: dict[str, Callable[[], bytes]] = {
    "rgba.png": lambda: pil_bytes(Image.fromarray(RGBA8, "RGBA"), "PNG"),
    "gray_alpha.png": lambda: pil_bytes(Image.fromarray(RGBA8[..., :2], "LA"), "PNG"),
    "palette_transparent.png": lambda: palette_png(True),
    "palette.png": lambda: palette_png(False),
    "colour_key.png": lambda: pil_bytes(Image.fromarray(RGBA8[..., :3]), "PNG",
                                        transparency=tuple(int(v) for v in RGBA8[0, 0, :3])),
    "rgb16.png": lambda: cv2_bytes(".png", DEEP[..., :3]),
    "rgba16.png": lambda: cv2_bytes(".png", DEEP),
    "gray16.png": lambda: cv2_bytes(".png", DEEP[..., 0]),
    "gray16.pgm": lambda: cv2_bytes(".pgm", DEEP[..., 0]),
    "gray16.tif": lambda: cv2_bytes(".tif", DEEP[..., 0]),
    "rgb16.tif": lambda: cv2_bytes(".tif", DEEP[..., :3]),
    "rgba.tif": lambda: pil_bytes(Image.fromarray(RGBA8, "RGBA"), "TIFF"),  # alpha unassociated: premultiplied
    "bgra_no_extrasamples.tif": lambda: cv2_bytes(".tif", RGBA8),  # a fourth channel not marked alpha: kept out
    "bgra16.tif": lambda: cv2_bytes(".tif", DEEP),
    "rgba.webp": lambda: pil_bytes(Image.fromarray(RGBA8, "RGBA"), "WEBP", lossless=True),
    "bgra.bmp": lambda: cv2_bytes(".bmp", RGBA8),
    "cmyk.jpg": lambda: pil_bytes(Image.fromarray(RGBA8, "CMYK"), "JPEG", quality=95),
    "cmyk.tif": lambda: pil_bytes(Image.fromarray(RGBA8, "CMYK"), "TIFF"),
    "cmyk_flat.jpg": lambda: pil_bytes(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95),
    "gray.jpg": lambda: pil_bytes(Image.fromarray(RGBA8[..., 0]), "JPEG", quality=90),
    "exif_rotated.jpg": rotated_jpeg,
    "bilevel.png": lambda: pil_bytes(Image.fromarray(RGBA8[..., 0] > 127), "PNG"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_decodes_exactly_as_cv2_imread(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(CASES[name]())
    reference = cv2.imread(str(path))
    assert reference is not None
    np.testing.assert_array_equal(read_image(path), reference[..., ::-1])


def test_rgba_png_is_not_composited_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "cutout.png"
    path.write_bytes(CASES["rgba.png"]())
    np.testing.assert_array_equal(read_image(path), RGBA8[..., :3])
    alpha = RGBA8[..., 3:].astype(np.float64) / 255
    expected = np.rint(RGBA8[..., :3] * alpha + np.array([0, 0, 255]) * (1 - alpha))
    np.testing.assert_array_equal(read_image(path, background=(0, 0, 255)), expected.astype(np.uint8))


def test_background_must_be_none_or_a_colour(tmp_path: Path) -> None:
    path = tmp_path / "cutout.png"
    path.write_bytes(CASES["rgba.png"]())
    for bad in [(0, 0), (0, 0, 256), (-1, 0, 0)]:
        with pytest.raises(ValueError, match="background"):
            read_image(path, background=bad)
