"""read_image / decode_image: a corpus of bad inputs (each a typed error naming the file) and the good
variants (orientation, bit depth, alpha, palette, colour spaces) decoding to the right RGB."""

from __future__ import annotations

import io
import os
import pickle
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps, features

from sapiens2.io import images
from sapiens2.io.images import (
    IMAGE_EXTENSIONS,
    CorruptImageError,
    EmptyImageError,
    ImageDecodeError,
    ImageTooLargeError,
    NotAnImageError,
    TruncatedImageError,
    UnreadableImageError,
    UnsupportedImageFormatError,
    decode_image,
    is_image_path,
    read_image,
)

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


# ------------------------------------------------------------------------------------------- makers


def encode(array: np.ndarray | Image.Image, fmt: str, **kw) -> bytes:
    img = array if isinstance(array, Image.Image) else Image.fromarray(array)
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def noise(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def quadrants(h: int = 32, w: int = 48) -> np.ndarray:
    """Upright test card: red top-left, green top-right, blue bottom-left, white bottom-right."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = RED
    a[: h // 2, w // 2 :] = GREEN
    a[h // 2 :, : w // 2] = BLUE
    a[h // 2 :, w // 2 :] = WHITE
    return a


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b""))


def corner_colours(a: np.ndarray) -> tuple[tuple[int, ...], ...]:
    """The colours at the centres of the four quadrants: TL, TR, BL, BR."""
    h, w = a.shape[:2]
    pts = [(h // 4, w // 4), (h // 4, 3 * w // 4), (3 * h // 4, w // 4), (3 * h // 4, 3 * w // 4)]
    return tuple(tuple(int(round(v / 255)) * 255 for v in a[y, x]) for y, x in pts)


# --------------------------------------------------------------------------------------- bad corpus

_JPEG = encode(noise(), "JPEG", quality=90)
_PNG = encode(noise(), "PNG")


def _bad_png_crc() -> bytes:
    d = bytearray(_PNG)
    d[29] ^= 0xFF  # inside the IHDR CRC
    return bytes(d)


def _bad_png_idat() -> bytes:
    body = b"this is not zlib data at all" * 8
    ihdr = struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


# name, file content, expected error type
BAD_BYTES = [
    ("zero_byte.jpg", b"", EmptyImageError),
    ("truncated_half.jpg", _JPEG[: len(_JPEG) // 2], TruncatedImageError),
    ("truncated_after_header.jpg", _JPEG[:200], TruncatedImageError),
    ("truncated_last_bytes.jpg", _JPEG[:-40], TruncatedImageError),
    ("truncated_half.png", _PNG[: len(_PNG) // 2], TruncatedImageError),
    ("truncated_in_header.png", _PNG[:40], TruncatedImageError),
    ("random_bytes.jpg", np.random.default_rng(1).bytes(2048), NotAnImageError),
    ("text_file.png", b"just some notes\nnot a picture\n" * 20, NotAnImageError),
    ("saved_page.jpg", b"<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head></html>", NotAnImageError),
    ("api_reply.png", b'{"error": "rate limited", "code": 429}', NotAnImageError),
    ("clip.jpg", b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 64, NotAnImageError),
    ("clip.png", b"\x1a\x45\xdf\xa3" + b"\x00" * 64, NotAnImageError),
    ("archive.png", b"PK\x03\x04" + b"\x00" * 64, NotAnImageError),
    ("phone.heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64, UnsupportedImageFormatError),
    ("logo.svg.png", b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>',
     UnsupportedImageFormatError),
    ("layers.psd", b"8BPS\x00\x01" + b"\x00" * 64, UnsupportedImageFormatError),
    ("render.exr", b"\x76\x2f\x31\x01\x02\x00\x00\x00" + b"\x00" * 64, UnsupportedImageFormatError),
    ("next_gen.jxl", b"\xff\x0a" + b"\x00" * 64, UnsupportedImageFormatError),
    ("scan.pdf.jpg", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + b"0" * 64, UnsupportedImageFormatError),
    ("bomb.png", png_bomb(100_000, 100_000), ImageTooLargeError),
    ("wide_bomb.png", png_bomb(2**31 - 1, 2), ImageTooLargeError),
    ("bad_crc.png", _bad_png_crc(), CorruptImageError),
    ("bad_idat.png", _bad_png_idat(), CorruptImageError),
    ("soi_then_garbage.jpg", b"\xff\xd8\xff\xe0" + np.random.default_rng(2).bytes(512), CorruptImageError),
]


@pytest.mark.parametrize(("name", "content", "error"), BAD_BYTES, ids=[b[0] for b in BAD_BYTES])
def test_bad_file_gives_typed_error_naming_the_file(tmp_path: Path, name: str, content: bytes, error: type) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(error) as info:
        read_image(path)
    assert isinstance(info.value, ImageDecodeError)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    assert info.value.reason and info.value.reason in str(info.value)


@pytest.mark.parametrize(("name", "content", "error"), BAD_BYTES, ids=[b[0] for b in BAD_BYTES])
def test_decode_image_gives_the_same_errors_for_bytes(name: str, content: bytes, error: type) -> None:
    with pytest.raises(error, match=name):
        decode_image(content, f"upload/{name}")


def test_truncated_is_a_kind_of_corrupt() -> None:
    assert issubclass(TruncatedImageError, CorruptImageError)
    for cls in (UnreadableImageError, EmptyImageError, NotAnImageError, UnsupportedImageFormatError,
                ImageTooLargeError, CorruptImageError):
        assert issubclass(cls, ImageDecodeError)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jpg"
    with pytest.raises(UnreadableImageError, match="does not exist") as info:
        read_image(path)
    assert info.value.path == str(path)


def test_directory_named_like_an_image(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").mkdir()
    with pytest.raises(UnreadableImageError, match=r"x\.jpg: is a directory"):
        read_image(tmp_path / "x.jpg")


def test_broken_symlink(tmp_path: Path) -> None:
    (tmp_path / "link.jpg").symlink_to(tmp_path / "gone.jpg")
    with pytest.raises(UnreadableImageError, match="broken symbolic link"):
        read_image(tmp_path / "link.jpg")


def test_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").symlink_to(tmp_path / "b.jpg")
    (tmp_path / "b.jpg").symlink_to(tmp_path / "a.jpg")
    with pytest.raises(UnreadableImageError, match=r"a\.jpg"):
        read_image(tmp_path / "a.jpg")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")
def test_fifo_named_like_an_image_does_not_block(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(UnreadableImageError, match="not a regular file"):
        read_image(tmp_path / "pipe.jpg")


def test_unreadable_permissions_real(tmp_path: Path) -> None:
    path = tmp_path / "secret.png"
    path.write_bytes(_PNG)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running with privileges that ignore file permissions (e.g. root)")
        with pytest.raises(UnreadableImageError, match="permission denied"):
            read_image(path)
    finally:
        path.chmod(0o600)


def test_unreadable_permissions_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same mapping without depending on who runs the tests: open() itself refuses."""
    path = tmp_path / "secret.png"
    path.write_bytes(_PNG)
    real_open = open

    def refusing_open(file, *args, **kwargs):
        if os.fspath(file) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refusing_open)
    with pytest.raises(UnreadableImageError, match=r"secret\.png: permission denied"):
        read_image(path)


def test_real_image_over_a_lowered_pixel_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(encode(noise(100, 100), "PNG"))
    with pytest.raises(ImageTooLargeError, match=r"100x100 = 10000 pixels, over the limit of 5000"):
        read_image(path, max_pixels=5000)
    assert read_image(path, max_pixels=10_000).shape == (100, 100, 3)


def test_pixel_limit_is_an_error_not_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageTooLargeError):
            decode_image(png_bomb(20_000, 10_000), "bomb.png")  # 200 MP: over ours and Pillow's limits
        with pytest.raises(ImageTooLargeError):
            decode_image(png_bomb(10_000, 10_000), "bomb.png", max_pixels=50_000_000)


def test_byte_limit_checked_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "large.jpg"
    path.write_bytes(_JPEG)
    with pytest.raises(ImageTooLargeError, match="bytes, over the limit of 100 bytes"):
        read_image(path, max_bytes=100)


def test_16bit_colour_png_is_checked_against_the_limit_too() -> None:
    data = cv2.imencode(".png", np.zeros((50, 50, 3), np.uint16))[1].tobytes()
    with pytest.raises(ImageTooLargeError):
        decode_image(data, "deep.png", max_pixels=100)


def test_errors_survive_pickling() -> None:
    err = TruncatedImageError("a/b.jpg", "ends early")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is TruncatedImageError
    assert (back.path, back.reason, str(back)) == ("a/b.jpg", "ends early", "a/b.jpg: ends early")


def test_invalid_arguments_are_value_errors() -> None:
    with pytest.raises(ValueError):
        decode_image(_PNG, "x.png", background=(0, 0))
    with pytest.raises(ValueError):
        decode_image(_PNG, "x.png", max_pixels=0)


# --------------------------------------------------------------------------------------- good images


def test_result_is_contiguous_rgb_uint8(tmp_path: Path) -> None:
    a = noise()
    path = tmp_path / "n.png"
    path.write_bytes(encode(a, "PNG"))
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (48, 64, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, a)


def test_channel_order_is_rgb_not_bgr() -> None:
    a = np.zeros((8, 8, 3), np.uint8)
    a[...] = (250, 10, 20)
    assert tuple(decode_image(encode(a, "PNG"), "x.png")[0, 0]) == (250, 10, 20)


# How each orientation stores the upright card: orientation n means "apply transform n to display".
STORED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.rot90(a, 1),  # displayed after a clockwise turn, so stored turned counter-clockwise
    7: lambda a: np.rot90(np.swapaxes(a, 0, 1), 2),
    8: lambda a: np.rot90(a, -1),
}


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_exif_orientation(orientation: int, fmt: str) -> None:
    upright = quadrants()
    stored = Image.fromarray(np.ascontiguousarray(STORED[orientation](upright)))
    exif = stored.getexif()
    exif[0x0112] = orientation
    kw = {"quality": 95} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}
    data = encode(stored, fmt, exif=exif.tobytes(), **kw)
    out = decode_image(data, f"o{orientation}.{fmt.lower()}")
    assert out.shape == upright.shape
    assert corner_colours(out) == (RED, GREEN, BLUE, WHITE)
    # Pillow's own transpose agrees pixel for pixel.
    ref = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    np.testing.assert_array_equal(out, ref)


def test_corrupt_exif_is_ignored_not_fatal() -> None:
    """A damaged EXIF block must not cost the picture: pixels decode, orientation counts as upright."""
    img = Image.fromarray(quadrants())
    exif = img.getexif()
    exif[0x0112] = 6
    data = bytearray(encode(img, "JPEG", quality=95, exif=exif.tobytes()))
    at = data.find(b"Exif\x00\x00")
    data[at + 6 : at + 22] = b"\xff" * 16  # wreck the TIFF header inside the EXIF segment
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's "Corrupt EXIF" warning goes to the log, not the caller
        out = decode_image(bytes(data), "corrupt_exif.jpg")
    assert out.shape == (32, 48, 3)
    assert corner_colours(out) == (RED, GREEN, BLUE, WHITE)


@pytest.mark.parametrize("value", [0, 9, 65535])
def test_out_of_range_orientation_is_ignored(value: int) -> None:
    img = Image.fromarray(quadrants())
    exif = img.getexif()
    exif[0x0112] = value
    out = decode_image(encode(img, "PNG", exif=exif.tobytes()), "weird.png")
    np.testing.assert_array_equal(out, quadrants())


def test_grayscale_is_replicated() -> None:
    g = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = decode_image(encode(g, "PNG"), "gray.png")
    assert out.shape == (16, 16, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], g)


def test_bilevel_image() -> None:
    img = Image.fromarray(np.eye(8, dtype=bool))
    assert img.mode == "1"
    out = decode_image(encode(img, "PNG"), "bw.png")
    np.testing.assert_array_equal(out[..., 0], np.eye(8, dtype=np.uint8) * 255)


def test_16bit_gray_png_keeps_the_high_byte_like_opencv() -> None:
    values = np.array([[0, 255, 257, 32896, 65280, 65535]], np.uint16)
    data = cv2.imencode(".png", values)[1].tobytes()
    out = decode_image(data, "depthlike.png")
    # 255 -> 0 and 65280 -> 255 show the high byte (v >> 8), what cv2.imread gives.
    assert out[0, :, 0].tolist() == [0, 0, 1, 128, 255, 255]
    assert (out[..., 0] == out[..., 2]).all()
    # Compositing (an explicit background) scales at full precision: round(v * 255 / 65535).
    assert decode_image(data, "depthlike.png", background=(0, 0, 0))[0, :, 0].tolist() == [0, 1, 1, 128, 254, 255]


def test_16bit_colour_png_keeps_the_high_byte_or_full_precision_when_compositing() -> None:
    rgb = np.array([[[65535, 32896, 0], [255, 65280, 257]]], np.uint16)
    data = cv2.imencode(".png", rgb[..., ::-1].copy())[1].tobytes()  # cv2 writes BGR
    assert decode_image(data, "deep.png").tolist() == [[[255, 128, 0], [0, 255, 1]]]
    assert decode_image(data, "deep.png", background=(9, 9, 9)).tolist() == [[[255, 128, 0], [1, 254, 1]]]


def test_16bit_rgba_png_alpha_ignored_or_composited() -> None:
    rgba = np.array([[[65535, 0, 0, 65535], [65535, 65535, 65535, 0], [0, 65535, 0, 32768]]], np.uint16)
    data = cv2.imencode(".png", rgba[..., [2, 1, 0, 3]].copy())[1].tobytes()
    assert decode_image(data, "deep_alpha.png").tolist() == [[[255, 0, 0], [255, 255, 255], [0, 255, 0]]]
    composited = decode_image(data, "deep_alpha.png", background=(0, 0, 0))
    assert composited.tolist() == [[[255, 0, 0], [0, 0, 0], [0, 128, 0]]]


def test_16bit_colour_png_orientation_applied() -> None:
    deep = STORED[6](quadrants()).astype(np.uint16) * 257
    data = cv2.imencode(".png", np.ascontiguousarray(deep[..., ::-1]))[1].tobytes()
    # add an eXIf chunk (orientation 6) before IEND
    exif = Image.Exif()
    exif[0x0112] = 6
    body = exif.tobytes()[6:] if exif.tobytes().startswith(b"Exif\x00\x00") else exif.tobytes()
    data = data[:-12] + png_chunk(b"eXIf", body) + data[-12:]
    out = decode_image(data, "deep_rotated.png")
    np.testing.assert_array_equal(out, quadrants())


def test_16bit_tiff_colour() -> None:
    rgb = np.array([[[65535, 65280, 255]]], np.uint16)
    data = cv2.imencode(".tiff", rgb[..., ::-1].copy())[1].tobytes()
    assert decode_image(data, "scan.tif").tolist() == [[[255, 254, 1]]]


def test_float_gray_tiff_taken_as_unit_range() -> None:
    f = np.array([[0.0, 0.5, 1.0, 2.0, -1.0, np.nan]], np.float32)
    img = Image.fromarray(f)
    assert img.mode == "F"
    out = decode_image(encode(img, "TIFF"), "float.tif")
    assert out[0, :, 0].tolist() == [0, 128, 255, 255, 0, 0]


def test_float_colour_tiff_via_opencv() -> None:
    f = np.array([[[1.0, 0.5, 0.0], [0.25, 0.0, 3.0]]], np.float32)
    data = cv2.imencode(".tiff", f[..., ::-1].copy())[1].tobytes()
    assert decode_image(data, "float_rgb.tif").tolist() == [[[255, 128, 0], [64, 0, 255]]]


def test_rgba_alpha_ignored_by_default_composited_on_request() -> None:
    a = np.array([[[200, 100, 50, 128], [10, 20, 30, 0], [10, 20, 30, 255]]], np.uint8)
    data = encode(a, "PNG")
    assert decode_image(data, "cut.png").tolist() == [[[200, 100, 50], [10, 20, 30], [10, 20, 30]]]
    assert decode_image(data, "cut.png", background=(0, 0, 0)).tolist() == [[[100, 50, 25], [0, 0, 0], [10, 20, 30]]]
    assert decode_image(data, "cut.png", background=(255, 255, 255)).tolist() == [
        [[227, 177, 152], [255, 255, 255], [10, 20, 30]]
    ]


def test_la_gray_with_alpha() -> None:
    la = np.array([[[200, 255], [200, 0], [200, 51]]], np.uint8)
    img = Image.fromarray(la)
    assert img.mode == "LA"
    assert decode_image(encode(img, "PNG"), "la.png")[..., 0].tolist() == [[200, 200, 200]]
    out = decode_image(encode(img, "PNG"), "la.png", background=(0, 0, 0))
    assert out[..., 0].tolist() == [[200, 0, 40]]


def test_palette_with_transparency() -> None:
    img = Image.new("P", (3, 1))
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (253 * 3))
    img.putdata([0, 1, 2])
    data = encode(img, "PNG", transparency=1)  # index 1 (red) is transparent
    assert decode_image(data, "pal.png").tolist() == [[[0, 0, 0], [255, 0, 0], [0, 0, 255]]]
    assert decode_image(data, "pal.png", background=(0, 0, 0)).tolist() == [[[0, 0, 0], [0, 0, 0], [0, 0, 255]]]
    assert decode_image(data, "pal.png", background=(0, 255, 0)).tolist() == [[[0, 0, 0], [0, 255, 0], [0, 0, 255]]]


def test_palette_without_transparency() -> None:
    img = Image.new("P", (2, 1))
    img.putpalette([12, 34, 56, 200, 100, 0] + [0] * (254 * 3))
    img.putdata([0, 1])
    assert decode_image(encode(img, "PNG"), "pal.png").tolist() == [[[12, 34, 56], [200, 100, 0]]]


def test_gif_with_transparency() -> None:
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * (254 * 3))
    img.putdata([0, 1])
    data = encode(img, "GIF", transparency=0)
    # The stored palette colour (OpenCV >= 4.11 shows the GIF's background colour there instead, and
    # older OpenCV cannot read GIF at all; see the module docstring).
    assert decode_image(data, "anim.gif").tolist() == [[[255, 0, 0], [0, 255, 0]]]
    assert decode_image(data, "anim.gif", background=(0, 0, 0)).tolist() == [[[0, 0, 0], [0, 255, 0]]]


def test_cmyk_jpeg() -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red ink mix
    out = decode_image(encode(cmyk, "JPEG", quality=95), "print.jpg")
    assert out.shape == (16, 16, 3)
    assert np.abs(out.astype(int) - RED).max() <= 3


@pytest.mark.parametrize(
    ("fmt", "ext", "kw", "exact"),
    [
        ("PNG", "png", {}, True),
        ("BMP", "bmp", {}, True),
        ("TIFF", "tif", {}, True),
        ("TIFF", "tiff", {"compression": "tiff_lzw"}, True),
        ("WEBP", "webp", {"lossless": True}, True),
        ("PPM", "ppm", {}, True),
        ("QOI", "qoi", {}, True),
        ("JPEG2000", "jp2", {"irreversible": False}, True),
        ("JPEG", "jpg", {"quality": 95}, False),
    ],
)
def test_formats_round_trip(tmp_path: Path, fmt: str, ext: str, kw: dict, exact: bool) -> None:
    a = quadrants()
    path = tmp_path / f"card.{ext.upper()}"  # upper-case extension on purpose
    path.write_bytes(encode(a, fmt, **kw))
    out = read_image(path)
    if exact:
        np.testing.assert_array_equal(out, a)
    else:
        assert corner_colours(out) == (RED, GREEN, BLUE, WHITE)


@pytest.mark.skipif(not features.check("avif"), reason="Pillow here is built without AVIF")
def test_avif_round_trip() -> None:
    out = decode_image(encode(quadrants(), "AVIF", quality=95), "card.avif")
    assert corner_colours(out) == (RED, GREEN, BLUE, WHITE)


def test_opencv_written_jpeg_and_png(tmp_path: Path) -> None:
    a = quadrants()
    for ext in (".png", ".jpg"):
        data = cv2.imencode(ext, a[..., ::-1])[1].tobytes()
        assert corner_colours(decode_image(data, "cv" + ext)) == (RED, GREEN, BLUE, WHITE)


def test_accepts_bytearray_and_memoryview() -> None:
    for data in (bytearray(_PNG), memoryview(_PNG)):
        assert decode_image(data, "x.png").shape == (48, 64, 3)


# ------------------------------------------------------------------------------------------ extensions


def test_extension_list() -> None:
    for ext in (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"):
        assert ext in IMAGE_EXTENSIONS
    assert all(e == e.lower() and e.startswith(".") for e in IMAGE_EXTENSIONS)
    assert ".heic" not in IMAGE_EXTENSIONS  # no HEIF decoder in this install
    assert is_image_path("a/B.JPG") and is_image_path("x.TiFf") and not is_image_path("clip.mp4")
    assert (".avif" in IMAGE_EXTENSIONS) == bool(features.check("avif"))


# ------------------------------------------------------------------------------------------- fuzzing

_SEEDS = [encode(quadrants(16, 16), "PNG"), encode(quadrants(16, 16), "JPEG"), encode(quadrants(16, 16), "GIF"),
          encode(quadrants(16, 16), "TIFF"), encode(quadrants(16, 16), "BMP"), encode(quadrants(16, 16), "WEBP")]


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(range(len(_SEEDS))), cut=st.integers(0, 4000),
       flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=4))
def test_damaged_files_never_escape_the_error_hierarchy(seed: int, cut: int, flips: list) -> None:
    data = bytearray(_SEEDS[seed])
    for at, value in flips:
        if data:
            data[at % len(data)] = value
    data = bytes(data[: max(0, len(data) - cut % (len(data) + 1))])
    try:
        out = decode_image(data, "fuzz.bin")
    except ImageDecodeError as e:
        assert e.path == "fuzz.bin" and e.reason
    else:
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


@settings(max_examples=100, deadline=None, database=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_escape_the_error_hierarchy(data: bytes) -> None:
    try:
        out = decode_image(data, "any.bin")
    except ImageDecodeError:
        pass
    else:
        assert out.dtype == np.uint8 and out.shape[2] == 3


def test_module_is_documented() -> None:
    doc = images.__doc__ or ""
    assert "black" in doc and "RGB" in doc and "16-bit" in doc


@pytest.mark.parametrize(
    ("pixels", "key"),
    [(np.array([[10, 200]], np.uint8), 10), (np.array([[[1, 2, 3], [200, 100, 50]]], np.uint8), (1, 2, 3))],
)
def test_png_colour_key_transparency(pixels: np.ndarray, key) -> None:
    """PNG tRNS on a gray or RGB image marks one value transparent: ignored by default (as cv2.imread),
    honoured when compositing."""
    data = encode(pixels, "PNG", transparency=key)
    rgb = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=2)
    assert decode_image(data, "keyed.png").tolist() == rgb.tolist()
    out = decode_image(data, "keyed.png", background=(0, 0, 0))
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 1].tolist() == rgb[0, 1].tolist()


def test_16bit_png_colour_key_transparency() -> None:
    gray = cv2.imencode(".png", np.array([[1000, 65535]], np.uint16))[1].tobytes()
    rgb = cv2.imencode(".png", np.array([[[3000, 2000, 1000], [0, 0, 65535]]], np.uint16))[1].tobytes()
    at = 8 + 25  # right after IHDR
    gray = gray[:at] + png_chunk(b"tRNS", struct.pack(">H", 1000)) + gray[at:]
    rgb = rgb[:at] + png_chunk(b"tRNS", struct.pack(">HHH", 1000, 2000, 3000)) + rgb[at:]
    assert decode_image(gray, "g16.png", background=(0, 0, 0)).tolist() == [[[0, 0, 0], [255, 255, 255]]]
    assert decode_image(rgb, "rgb16.png", background=(0, 0, 0)).tolist() == [[[0, 0, 0], [255, 0, 0]]]
    assert decode_image(gray, "g16.png").tolist() == [[[3, 3, 3], [255, 255, 255]]]
    assert decode_image(rgb, "rgb16.png").tolist() == [[[3, 7, 11], [255, 0, 0]]]


def test_format_comes_from_the_bytes_not_the_name(tmp_path: Path) -> None:
    path = tmp_path / "actually_a_png.jpg"
    path.write_bytes(encode(quadrants(), "PNG"))
    np.testing.assert_array_equal(read_image(path), quadrants())
