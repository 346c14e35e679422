"""The decompression-bomb limit is checked from the header, before any pixel is decoded, for every
format; and the memory a decode needs stays a few bytes per pixel whatever the colour mode."""

from __future__ import annotations

import io
import struct
import tracemalloc

import cv2
import numpy as np
import pytest
from PIL import Image

from sapiens2.io import images
from sapiens2.io.images import CorruptImageError, ImageTooLargeError, decode_image
from sapiens2.io.pixels import TILE_PIXELS


def _pil(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


class PixelsDecoded(Exception):
    pass


@pytest.fixture
def no_pixel_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to decode pixels (Pillow's load or OpenCV) fails the test (Pillow's header parse,
    `Image.open`, still runs)."""

    def refuse(*args, **kwargs):
        raise PixelsDecoded("pixels were decoded before the size was checked")

    monkeypatch.setattr(images, "_load", refuse)
    monkeypatch.setattr(images.cv2, "imdecode", refuse)


@pytest.fixture(scope="module")
def float_tiff_bomb() -> bytes:
    return cv2.imencode(".tif", np.zeros((3000, 3000, 3), np.float32), [cv2.IMWRITE_TIFF_COMPRESSION, 8])[1].tobytes()


def test_deflate_float_tiff_bomb_is_refused_before_decoding(float_tiff_bomb: bytes, no_pixel_decoding) -> None:
    """A ~200 KB file that decodes to 3000 x 3000 float RGB (108 MB): Pillow cannot open it, so its size
    must come from the TIFF header, not from OpenCV after the decode."""
    bomb = float_tiff_bomb
    assert len(bomb) < 400_000
    with pytest.raises(ImageTooLargeError, match="3000x3000"):
        decode_image(bomb, "bomb.tif", max_pixels=1_000_000)


_SMALL = np.random.default_rng(0).integers(0, 256, (64, 64, 4), dtype=np.uint8)
FILES = {
    "png": lambda: _pil(Image.fromarray(_SMALL[..., :3]), "PNG"),
    "png16": lambda: cv2.imencode(".png", _SMALL[..., :3].astype(np.uint16) * 257)[1].tobytes(),
    "jpeg": lambda: _pil(Image.fromarray(_SMALL[..., :3]), "JPEG"),
    "cmyk-jpeg": lambda: _pil(Image.fromarray(_SMALL, "CMYK"), "JPEG"),
    "bmp": lambda: _pil(Image.fromarray(_SMALL[..., :3]), "BMP"),
    "tiff": lambda: _pil(Image.fromarray(_SMALL[..., :3]), "TIFF"),
    "tiff16": lambda: cv2.imencode(".tif", _SMALL[..., :3].astype(np.uint16))[1].tobytes(),
    "float-tiff": lambda: cv2.imencode(".tif", _SMALL[..., :3].astype(np.float32))[1].tobytes(),
    "webp": lambda: _pil(Image.fromarray(_SMALL[..., :3]), "WEBP"),
    "gif": lambda: _pil(Image.fromarray(_SMALL[..., 0]).convert("P"), "GIF"),
    "jpeg2000": lambda: _pil(Image.fromarray(_SMALL[..., :3]), "JPEG2000"),
    "ppm": lambda: _pil(Image.fromarray(_SMALL[..., :3]), "PPM"),
    "qoi": lambda: _pil(Image.fromarray(_SMALL[..., :3]), "QOI"),
}


@pytest.fixture
def encoded(request: pytest.FixtureRequest) -> bytes:
    return FILES[request.param]()


@pytest.mark.parametrize("encoded", sorted(FILES), indirect=True)
def test_every_format_is_checked_from_its_header(encoded: bytes, no_pixel_decoding) -> None:
    with pytest.raises(ImageTooLargeError, match="64x64"):
        decode_image(encoded, "big.img", max_pixels=64 * 64 - 1)


@pytest.mark.parametrize("kind", sorted(FILES))
def test_every_format_decodes_at_its_limit(kind: str) -> None:
    assert decode_image(FILES[kind](), f"ok.{kind}", max_pixels=64 * 64).shape == (64, 64, 3)


def _ifd(order: str, entries: list[tuple[int, int, int]], big: bool) -> bytes:
    """A TIFF header whose first directory holds `entries` (tag, type, value)."""
    if big:
        head = (b"II" if order == "<" else b"MM") + struct.pack(order + "HHHQ", 43, 8, 0, 16)
        body = struct.pack(order + "Q", len(entries))
        for tag, kind, value in entries:
            packed = struct.pack(order + {3: "H", 4: "I", 16: "Q"}[kind], value)
            body += struct.pack(order + "HHQ", tag, kind, 1) + packed.ljust(8, b"\0")  # values are left-justified
        return head + body
    head = (b"II" if order == "<" else b"MM") + struct.pack(order + "HI", 42, 8)
    body = struct.pack(order + "H", len(entries))
    for tag, kind, value in entries:
        packed = struct.pack(order + ("H" if kind == 3 else "I"), value)
        body += struct.pack(order + "HHI", tag, kind, 1) + packed.ljust(4, b"\0")
    return head + body + b"\0\0\0\0"


@pytest.mark.parametrize("order", ["<", ">"])
def test_tiff_size_is_read_from_classic_and_big_tiff_headers(order: str) -> None:
    assert images._tiff_size(_ifd(order, [(256, 3, 300), (257, 4, 70000)], big=False), "a.tif") == (300, 70000)
    assert images._tiff_size(_ifd(order, [(256, 16, 5000), (257, 4, 7000)], big=True), "b.tif") == (5000, 7000)


@pytest.mark.parametrize("data", [b"II*\x00\xff\xff\xff\x7f", b"II*\x00\x08\x00\x00\x00\x00\x00",
                                  _ifd("<", [(256, 3, 10)], big=False)])
def test_tiff_without_a_readable_size_is_corrupt_not_decoded(data: bytes) -> None:
    with pytest.raises(CorruptImageError, match="width and height"):
        images._tiff_size(data, "c.tif")


def _numpy_peak(data: bytes, **kwargs) -> int:
    """Peak bytes allocated through numpy (and OpenCV's Python arrays) during the decode; Pillow's own
    buffers are not traced."""
    tracemalloc.start()
    try:
        decode_image(data, "x", **kwargs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


def _bound(pixels: int, decoded_bytes_per_pixel: int = 0) -> int:
    """The decoder's samples, the 3-byte result and one band of temporaries (64 bytes per band pixel)."""
    return (decoded_bytes_per_pixel + 3) * pixels + 64 * TILE_PIXELS


@pytest.mark.parametrize("background", [None, (0, 0, 0)])
def test_rgba_decode_peak_is_the_result_and_one_band(background) -> None:
    """Not several float copies of the whole picture (~50 bytes per pixel before)."""
    h, w = 1500, 2000
    rgba = np.random.default_rng(1).integers(0, 256, (h, w, 4), dtype=np.uint8)
    data = _pil(Image.fromarray(rgba, "RGBA"), "PNG", compress_level=1)
    assert _numpy_peak(data, background=background) < _bound(h * w)


def test_16bit_rgba_composite_peak_is_the_samples_the_result_and_one_band() -> None:
    h, w = 1000, 1500
    deep = np.random.default_rng(2).integers(0, 65536, (h, w, 4), dtype=np.uint16)
    data = cv2.imencode(".png", deep, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()
    # OpenCV's 8 bytes per pixel, never copied whole (a BGRA -> RGBA reorder used to copy them).
    assert _numpy_peak(data, background=(0, 0, 0)) < _bound(h * w, 8)


def _palette_png() -> bytes:
    img = Image.fromarray(_SMALL[..., 0] % 3, "P")
    img.putpalette([250, 0, 0, 0, 250, 0, 0, 0, 250])
    return _pil(img, "PNG", transparency=1)


BANDED = {
    "rgba": (lambda: _pil(Image.fromarray(_SMALL, "RGBA"), "PNG"), [None, (0, 0, 0), (10, 200, 30)]),
    "palette+transparency": (_palette_png, [None, (0, 0, 0)]),
    "colour-key": (lambda: _pil(Image.fromarray(_SMALL[..., :3]), "PNG",
                                transparency=tuple(map(int, _SMALL[0, 0, :3]))), [None, (0, 0, 0)]),
    "cmyk-jpeg": (FILES["cmyk-jpeg"], [None]),
    "rgba16": (lambda: cv2.imencode(".png", _SMALL.astype(np.uint16) * 250)[1].tobytes(), [None, (0, 0, 0)]),
    "float-tiff": (FILES["float-tiff"], [None]),
}


@pytest.mark.parametrize("kind", sorted(BANDED))
def test_band_by_band_conversion_equals_one_band(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from sapiens2.io import pixels

    make, backgrounds = BANDED[kind]
    data = make()
    for background in backgrounds:
        whole = decode_image(data, kind, background=background)
        monkeypatch.setattr(pixels, "TILE_PIXELS", 64 * 5)  # bands of 5 rows: 13 bands, the last one short
        banded = decode_image(data, kind, background=background)
        monkeypatch.undo()
        np.testing.assert_array_equal(banded, whole)
