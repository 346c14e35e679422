"""Robust image decoding: one function, one result type, one error hierarchy.

`read_image` / `decode_image` always return an ``H x W x 3`` ``uint8`` array in **RGB** order, upright
(EXIF orientation applied), C-contiguous. Every failure is an `ImageDecodeError` subclass whose message
names the file and the reason, so a batch job can log it, skip the file and carry on.

Conversions, by default those of the reference's ``cv2.imread(path)`` (then BGR -> RGB), so a photo gives
the same pixels here as in the reference demos:

- **Orientation.** EXIF tag 0x0112 values 1..8 are applied. A missing, unreadable or out-of-range tag
  means "upright"; a corrupt EXIF block never fails an image whose pixels decode.
- **Alpha** (LA, RGBA, PA, palette transparency, PNG colour keys) is **ignored**: the stored colour is kept,
  whatever the alpha. TIFF whose alpha is marked unassociated (ExtraSamples 2, what Pillow and most editors
  write) is the exception, as in OpenCV, which reads colour TIFF through libtiff's RGBA interface: there the
  colour is composited onto black (premultiplied by alpha).
  Pass ``background=(r, g, b)`` to composite every format onto that colour instead (``(0, 0, 0)``: a cutout
  on black is exactly ``foreground * alpha``, the convention matting data uses, and fully transparent pixels
  carry no hidden colour); samples are then scaled at full precision (16-bit: ``round(v * 255 / 65535)``).
- **Grayscale** (1, L, I;16, I, F) is replicated to three channels.
- **Palette** images are expanded through their palette.
- **16-bit** samples (PNG, PGM, gray TIFF) keep their high byte, ``v >> 8``, as libpng and OpenCV do.
  16-bit colour TIFF is scaled, ``round(v * 255 / 65535)`` (libtiff's RGBA interface). 16-bit colour
  PNG/TIFF is decoded with OpenCV (``IMREAD_UNCHANGED``) where the scaled value is needed, because Pillow
  keeps only the high byte of each sample.
- **32-bit integer** grayscale (Pillow mode ``I``) is read as 16-bit data (how Pillow stores 16-bit
  PNG): clipped to ``[0, 65535]``, then as above.
- **CMYK** JPEG and TIFF are converted exactly as OpenCV converts them (JPEG:
  ``(255 - K) - (C * (255 - K) >> 8)`` per channel; TIFF: ``(255 - C) * (255 - K) // 255``; see
  `sapiens2.io.pixels`). YCbCr / LAB / HSV images go through Pillow's conversion to RGB. No ICC profile
  is applied to any image (embedded profiles are ignored).
- **Float** images (TIFF/PFM, gray or colour), which ``cv2.imread`` cannot read, are taken to hold
  intensities in ``[0, 1]``: clipped, times 255, rounded; NaN becomes 0. A float map in other units (depth
  in metres, say) is not an image and should be read with a dedicated reader. Colour float TIFF, which
  Pillow cannot open, is decoded by OpenCV, and its orientation tag is not applied.
- **Animated / multi-page** files (GIF, APNG, WebP, TIFF) give their first frame. A transparent GIF pixel
  gives its stored palette colour (OpenCV >= 4.11 shows the GIF's background colour there instead, and
  older OpenCV cannot read GIF at all).

Formats: JPEG (incl. MPO), PNG/APNG, BMP, TIFF, WebP, GIF, JPEG 2000, PNM/PFM, QOI, and AVIF when
Pillow has libavif; see `IMAGE_EXTENSIONS`. The format is recognised from the bytes, not the name.
HEIC/HEIF, JPEG XL, OpenEXR, PSD, SVG and PDF are recognised and refused with
`UnsupportedImageFormatError` (no decoder for them is a dependency).

Decoding is done with Pillow, whose errors (unlike ``cv2.imread``'s silent ``None`` or half-grey
picture) tell a truncated file from a corrupt one, and whose header parse gives the image size before
any pixel is decoded, which is where the decompression-bomb limit (``max_pixels``) is enforced; a TIFF that
only OpenCV can decode has its size read from its first image directory first. Pillow's own hard stop
(``2 * PIL.Image.MAX_IMAGE_PIXELS``) still applies above that. Samples are converted to 8-bit RGB a band of
rows at a time (`sapiens2.io.pixels`), so the peak memory of a decode is the decoded samples plus the
3-byte output: 4-8 bytes per pixel for 8-bit modes, 16-24 for the 16-bit colour and float files OpenCV
decodes (its decoder holds a second copy of its samples); see BENCHMARKS.md. Pillow's warnings during a
decode are sent to this module's debug log; capturing them uses ``warnings.catch_warnings``, which is
process-wide, so decode in worker processes rather than threads if other threads rely on warnings.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import struct
import warnings
from pathlib import Path
from typing import Final

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError, features

from sapiens2.io.pixels import (
    Conversion,
    cmyk_to_rgb_like_libtiff,
    cmyk_to_rgb_like_opencv,
    convert_rows,
    samples_to_rgb8,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "CorruptImageError",
    "EmptyImageError",
    "ImageDecodeError",
    "ImageTooLargeError",
    "NotAnImageError",
    "TruncatedImageError",
    "UnreadableImageError",
    "UnsupportedImageFormatError",
    "decode_image",
    "is_image_path",
    "read_image",
]

logger = logging.getLogger(__name__)

# About 134 megapixels: above every current camera sensor (the largest are ~102 MP), below Pillow's
# own hard stop (2 * PIL.Image.MAX_IMAGE_PIXELS, ~179 MP), and ~400 MB once decoded to RGB.
DEFAULT_MAX_PIXELS: Final[int] = 2**27
# Refuse to even read a file larger than this into memory.
DEFAULT_MAX_BYTES: Final[int] = 1 << 30

_HAVE_AVIF: Final[bool] = bool(features.check("avif"))

# Pillow format name -> the file extensions we accept for it. Only formats with a reliable magic
# number are listed, so random bytes are never "identified" as, say, a headerless TGA.
_FORMAT_EXTENSIONS: Final[dict[str, tuple[str, ...]]] = {
    "JPEG": (".jpg", ".jpeg", ".jpe", ".jfif"),  # includes multi-picture (MPO) files from phones / cameras
    "PNG": (".png", ".apng"),
    "BMP": (".bmp", ".dib"),
    "TIFF": (".tif", ".tiff"),
    "WEBP": (".webp",),
    "GIF": (".gif",),
    "JPEG2000": (".jp2", ".j2k", ".j2c", ".jpc", ".jpf", ".jpx"),
    "PPM": (".pbm", ".pgm", ".ppm", ".pnm", ".pfm"),
    "QOI": (".qoi",),
    **({"AVIF": (".avif",)} if _HAVE_AVIF else {}),
}
_PIL_FORMATS: Final[tuple[str, ...]] = tuple(_FORMAT_EXTENSIONS)

#: Every extension `read_image` accepts, lower case with the dot. Compare with ``suffix.lower()``.
IMAGE_EXTENSIONS: Final[frozenset[str]] = frozenset(e for exts in _FORMAT_EXTENSIONS.values() for e in exts)


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """True when the file name ends in one of `IMAGE_EXTENSIONS`, in any case."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


# --------------------------------------------------------------------------------------------- errors


class ImageDecodeError(Exception):
    """An image could not be turned into pixels. ``path`` names the file, ``reason`` says why."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep (path, reason) through pickling, e.g. across worker processes
        return (type(self), (self.path, self.reason))


class UnreadableImageError(ImageDecodeError):
    """The file cannot be read at all: missing, a directory, no permission, not a regular file."""


class EmptyImageError(ImageDecodeError):
    """The file is zero bytes long."""


class NotAnImageError(ImageDecodeError):
    """The bytes are not an image: text, HTML, a video, random data."""


class UnsupportedImageFormatError(ImageDecodeError):
    """A recognised image format (or pixel layout) that cannot be decoded here, e.g. HEIC, SVG, EXR."""


class ImageTooLargeError(ImageDecodeError):
    """The image (or file) exceeds the configured size limit: a decompression bomb or a huge scan."""


class CorruptImageError(ImageDecodeError):
    """The header is recognised but the pixel data cannot be decoded."""


class TruncatedImageError(CorruptImageError):
    """The file ends before its pixel data does (an interrupted download or copy)."""


# ------------------------------------------------------------------------------------------ public API


def read_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    background: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """Read an image file as an upright ``H x W x 3`` ``uint8`` RGB array.

    Raises an `ImageDecodeError` subclass naming ``path`` on any failure (see the module docstring for
    the conversions). ``max_pixels`` bounds ``width * height`` before decoding, ``max_bytes`` the file
    size before reading; ``None`` disables a limit. ``background``: None (default) ignores alpha as
    ``cv2.imread`` does; an RGB colour composites alpha onto it.
    """
    data = _read_bytes(path, max_bytes)
    return decode_image(data, os.fspath(path), max_pixels=max_pixels, background=background)


ImageLike = np.ndarray | str | os.PathLike


def as_image(image: ImageLike) -> np.ndarray:
    """An H x W x 3 uint8 RGB array, decoded from a path when given one; anything else is a clear error.

    The one input check of the predictors and the detector, so every entry point refuses the same things
    with the same words."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if type(image).__module__.startswith("torch"):
        raise TypeError("give images as H x W x 3 uint8 numpy arrays (RGB) or paths, not torch tensors")
    if not isinstance(image, np.ndarray):
        raise TypeError(f"an image must be an H x W x 3 uint8 RGB array or a path, not {type(image).__name__}")
    expected = "expected an H x W x 3 uint8 RGB image"
    if image.ndim == 2:
        raise ValueError(f"{expected}, got a 2-D array {image.shape} (replicate a grey image with "
                         "np.repeat(img[..., None], 3, axis=2))")
    if image.ndim != 3 or image.shape[2] != 3:
        alpha = " (drop or composite the alpha channel first)" if image.ndim == 3 and image.shape[2] == 4 else ""
        raise ValueError(f"{expected}, got shape {image.shape}{alpha}")
    if image.dtype != np.uint8:
        raise ValueError(f"{expected}, got dtype {image.dtype}; convert floats in [0, 1] with "
                         "(img * 255).round().astype(np.uint8)")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{expected}, got an empty image of shape {image.shape}")
    return np.ascontiguousarray(image)


def decode_image(
    data: bytes | bytearray | memoryview,
    name: str,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """Decode encoded image bytes (an upload, an archive member) exactly as `read_image` decodes a file.

    ``name`` is used only in error messages; the format is taken from the bytes, never the extension.
    """
    data = bytes(data)
    if not data:
        raise EmptyImageError(name, "file is empty (0 bytes)")
    if max_pixels is not None and max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive or None, got {max_pixels}")
    _check_background(background)

    kind, label = _sniff(data)
    if kind == "not-image":
        raise NotAnImageError(name, label)
    if kind == "unsupported":
        raise UnsupportedImageFormatError(name, label)

    # Pillow warns about odd-but-readable files (bad EXIF, surplus TIFF tags, its own softer pixel
    # limit). The outcome is decided here, so the warnings go to the debug log with the file's name.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rgb, orientation = _decode_pixels(data, name, label, max_pixels, background)
    for w in caught:
        logger.debug("%s: %s", name, w.message)
    if orientation == 1:
        return rgb
    return np.ascontiguousarray(_apply_orientation(rgb, orientation))


def _decode_pixels(data: bytes, name: str, label: str, max_pixels: int | None,
                   background: tuple[int, int, int] | None) -> tuple[np.ndarray, int]:
    """The stored pixels as uint8 RGB (orientation not yet applied) and the EXIF orientation."""
    img = _open_with_pillow(data, name, label, max_pixels)
    if img is None:
        # Pillow does not know this pixel layout (e.g. 3-channel float TIFF); OpenCV might. Its size
        # comes from the header first: OpenCV would decode a decompression bomb before saying how big.
        _check_pixels(_tiff_size(data, name), name, label, max_pixels)
        return _cv2_to_rgb8(data, name, label, _conversion(None, background)), 1
    with img:
        _load(img, name, label, data)
        orientation = _exif_orientation(img, name)
        conv = _conversion(img, background)
        if not _needs_cv2(img, data, conv):
            return _pillow_to_rgb8(img, name, conv), orientation
    # Pillow's pixels are released before OpenCV decodes the file at full precision.
    return _cv2_to_rgb8(data, name, label, conv), orientation


def _conversion(img: Image.Image | None, background: tuple[int, int, int] | None) -> Conversion:
    """The rules of the module docstring for one file (``img`` None: a TIFF only OpenCV reads):
    cv2.imread's by default, else compositing."""
    if background is not None:
        return Conversion(composite=True, background=tuple(float(v) for v in background), high_byte=False)
    if img is None:
        return Conversion(high_byte=False)  # libtiff's RGBA conventions, as below
    if img.format == "TIFF" and len(img.getbands()) >= 3:
        # OpenCV reads colour TIFF through libtiff's RGBA interface: 16-bit scaled, and colour premultiplied
        # when the file marks its alpha unassociated (ExtraSamples = 2).
        extra = img.tag_v2.get(338, ())
        return Conversion(composite=2 in (extra if isinstance(extra, tuple) else (extra,)), high_byte=False)
    return Conversion()


# ------------------------------------------------------------------------------------------- reading


def _read_bytes(path: str | os.PathLike[str], max_bytes: int | None) -> bytes:
    name = os.fspath(path)
    try:
        st = os.stat(name)
    except FileNotFoundError:
        reason = "broken symbolic link" if os.path.islink(name) else "file does not exist"
        raise UnreadableImageError(name, reason) from None
    except OSError as e:
        raise UnreadableImageError(name, f"cannot access file ({e.strerror or e})") from e
    if stat.S_ISDIR(st.st_mode):
        raise UnreadableImageError(name, "is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        # FIFOs and devices would block or stream forever.
        raise UnreadableImageError(name, "not a regular file (a pipe, socket or device)")
    if max_bytes is not None and st.st_size > max_bytes:
        raise ImageTooLargeError(name, f"file is {st.st_size} bytes, over the limit of {max_bytes} bytes")
    try:
        with open(name, "rb") as f:
            return f.read()
    except PermissionError as e:
        raise UnreadableImageError(name, "permission denied") from e
    except IsADirectoryError as e:
        raise UnreadableImageError(name, "is a directory, not a file") from e
    except OSError as e:
        raise UnreadableImageError(name, f"cannot read file ({e.strerror or e})") from e


# ------------------------------------------------------------------------------------------- sniffing

_ISO_BMFF_IMAGE_BRANDS: Final[dict[bytes, str]] = {
    b"heic": "HEIC", b"heix": "HEIC", b"heim": "HEIC", b"heis": "HEIC", b"hevc": "HEIC", b"hevx": "HEIC",
    b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF", b"jxl ": "JPEG XL",
    b"crx ": "Canon CR3 raw",
}
_ISO_BMFF_VIDEO_BRANDS: Final[frozenset[bytes]] = frozenset(
    {b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1", b"M4V ", b"M4VP", b"qt  ", b"3gp4",
     b"3gp5", b"3gp6", b"3g2a", b"dash", b"f4v "}
)


def _sniff(data: bytes) -> tuple[str, str]:
    """Classify bytes by their magic number: ("image", format), ("unsupported", reason) or
    ("not-image", reason). Pillow still has the final word on "image"."""
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return "image", "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "PNG"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "image", "TIFF"
    if head.startswith(b"BM") and int.from_bytes(head[14:18], "little") in (12, 16, 40, 52, 56, 64, 108, 124):
        return "image", "BMP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image", "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "WEBP"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "not-image", "this is an AVI video, not an image"
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or head.startswith(b"\xff\x4f\xff\x51"):
        return "image", "JPEG2000"
    if head[:4] == b"qoif":
        return "image", "QOI"
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456fF" and head[2:3].isspace():
        return "image", "PPM"
    if head[4:8] == b"ftyp":
        box_end = min(len(data), int.from_bytes(data[:4], "big"), 256)
        brands = [data[8:12]] + [data[i : i + 4] for i in range(16, box_end - 3, 4)]
        if b"avif" in brands or b"avis" in brands:
            if _HAVE_AVIF:
                return "image", "AVIF"
            return "unsupported", "AVIF images need Pillow built with libavif, which this install lacks"
        for brand in brands:
            if brand in _ISO_BMFF_IMAGE_BRANDS:
                fmt = _ISO_BMFF_IMAGE_BRANDS[brand]
                return "unsupported", f"{fmt} images are not supported here (convert to JPEG or PNG first)"
        if brands[0] in _ISO_BMFF_VIDEO_BRANDS or any(b in _ISO_BMFF_VIDEO_BRANDS for b in brands):
            return "not-image", "this is an MP4/QuickTime video, not an image"
        return "unsupported", f"an ISO media file (brand {brands[0].decode('latin-1')!r}) that is not a known image"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "not-image", "this is a Matroska/WebM video, not an image"
    if head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n"):
        return "unsupported", "JPEG XL images are not supported here (convert to JPEG or PNG first)"
    if head.startswith(b"\x76\x2f\x31\x01"):
        return "unsupported", "OpenEXR images are not supported here"
    if head.startswith(b"8BPS"):
        return "unsupported", "Photoshop PSD files are not supported here (export to PNG first)"
    if head.startswith(b"%PDF"):
        return "unsupported", "PDF documents are not supported (rasterise the page first)"
    if head.startswith(b"%!PS"):
        return "unsupported", "PostScript/EPS files are not supported (rasterise first)"
    if head.startswith(b"#?RADIANCE") or head.startswith(b"#?RGBE"):
        return "unsupported", "Radiance HDR images are not supported here"
    if head.startswith(b"\x00\x00\x01\x00") or head.startswith(b"\x00\x00\x02\x00"):
        return "unsupported", "Windows icon (ICO/CUR) files are not supported"

    text = _as_text(data[:4096])
    if text is not None:
        lowered = text.lstrip("\ufeff \t\r\n").lower()
        if "<svg" in lowered[:1024]:
            return "unsupported", "SVG vector graphics are not supported (rasterise to PNG first)"
        if lowered.startswith(("<!doctype html", "<html", "<head", "<body")) or "<html" in lowered[:1024]:
            return "not-image", "this is an HTML page, not an image (often a failed download)"
        if lowered.startswith(("{", "[")):
            return "not-image", "this is a JSON/text file, not an image"
        return "not-image", "this is a text file, not an image"
    if head.startswith((b"PK\x03\x04", b"\x1f\x8b", b"7z\xbc\xaf", b"Rar!")):
        return "not-image", "this is a compressed archive, not an image"
    return "not-image", "not a recognised image format (unknown or random bytes)"


def _as_text(chunk: bytes) -> str | None:
    """The chunk as text if it looks like text (decodes as UTF-8, almost no control characters)."""
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(chunk) - 3:  # a multi-byte character cut at the end of the chunk is fine
            return None
        text = chunk[: e.start].decode("utf-8")
    if not text:
        return None
    control = sum(1 for c in text if ord(c) < 32 and c not in "\t\r\n\f")
    return text if control <= len(text) // 100 else None


# ------------------------------------------------------------------------------------------- decoding


def _open_with_pillow(data: bytes, name: str, label: str, max_pixels: int | None) -> Image.Image | None:
    """Parse the header. Returns None when Pillow cannot identify a TIFF (OpenCV may still decode it)."""
    try:
        img = Image.open(io.BytesIO(data), formats=_PIL_FORMATS)
    except Image.DecompressionBombError as e:
        hard = 2 * Image.MAX_IMAGE_PIXELS
        if max_pixels is not None and max_pixels <= hard:
            reason = (f"{label} header claims more than {hard} pixels, over the limit of {max_pixels}"
                      " (a decompression bomb?)")
        else:
            reason = (f"{label} header claims more than {hard} pixels, Pillow's own hard limit: raise"
                      " PIL.Image.MAX_IMAGE_PIXELS as well as max_pixels to decode it")
        raise ImageTooLargeError(name, reason) from e
    except UnidentifiedImageError as e:
        if label == "TIFF":
            return None
        raise _load_error(name, label, data, e, during="header") from e
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ...
        raise _load_error(name, label, data, e, during="header") from e
    _check_pixels(img.size, name, label, max_pixels, img)
    return img


def _check_pixels(size: tuple[int, int], name: str, label: str, max_pixels: int | None, img=None) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        if img is not None:
            img.close()
        raise CorruptImageError(name, f"{label} header gives an empty size {width}x{height}")
    if max_pixels is not None and width * height > max_pixels:
        if img is not None:
            img.close()
        raise ImageTooLargeError(
            name, f"{label} image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
            " (a decompression bomb, or pass a larger max_pixels)"
        )


def _tiff_size(data: bytes, name: str) -> tuple[int, int]:
    """(width, height) from the first image directory of a classic or big TIFF, before any decoding."""
    try:
        order = "<" if data[:2] == b"II" else ">"
        big = struct.unpack_from(order + "H", data, 2)[0] == 43
        count_fmt, entry_size, value_at = ("Q", 20, 12) if big else ("H", 12, 8)
        ifd = struct.unpack_from(order + ("Q" if big else "I"), data, 8 if big else 4)[0]
        (count,) = struct.unpack_from(order + count_fmt, data, ifd)
        size: dict[int, int] = {}
        for i in range(min(count, 4096)):
            at = ifd + (8 if big else 2) + i * entry_size
            tag, kind = struct.unpack_from(order + "HH", data, at)
            if tag in (256, 257) and kind in (3, 4, 16):
                size[tag] = struct.unpack_from(order + {3: "H", 4: "I", 16: "Q"}[kind], data, at + value_at)[0]
    except struct.error:
        size = {}
    if 256 not in size or 257 not in size:
        raise CorruptImageError(name, "TIFF header is corrupt: no image width and height in its first directory")
    return size[256], size[257]


def _load(img: Image.Image, name: str, label: str, data: bytes) -> None:
    try:
        img.load()
    except Exception as e:
        raise _load_error(name, label, data, e, during="pixels") from e


def _load_error(name: str, label: str, data: bytes | None, err: Exception, during: str) -> ImageDecodeError:
    """Map a Pillow failure on a recognised format to truncated / unsupported / corrupt."""
    # Pillow's "cannot identify image file <_io.BytesIO object at 0x...>" says nothing useful.
    msg = "Pillow cannot parse it" if isinstance(err, UnidentifiedImageError) else str(err)
    lowered = msg.lower()
    if "truncated" in lowered or "premature end" in lowered or isinstance(err, EOFError) or _missing_end(label, data):
        return TruncatedImageError(name, f"{label} file is truncated: it ends before the image data does ({msg})")
    if "unsupported" in lowered or "not supported" in lowered or "unknown" in lowered:
        return UnsupportedImageFormatError(name, f"this {label} variant is not supported ({msg})")
    where = "header" if during == "header" else "pixel data"
    return CorruptImageError(name, f"{label} {where} is corrupt ({type(err).__name__}: {msg})")


def _missing_end(label: str, data: bytes | None) -> bool:
    """Whether a file that failed to parse lacks its format's end marker, i.e. was cut short."""
    if data is None:
        return False
    if label == "PNG":
        return b"IEND" not in data[-64:]
    if label == "JPEG":
        return b"\xff\xd9" not in data[-64:]
    return False


def _needs_cv2(img: Image.Image, data: bytes, conv: Conversion) -> bool:
    """Whether Pillow would lose precision that `conv` keeps: Pillow keeps only the high byte of 16-bit
    colour samples, which is the default for PNG but not for TIFF or when compositing."""
    if img.format == "PNG":
        # IHDR: bit depth at byte 24, colour type at 25 (0 = gray, which Pillow reads as I;16 exactly).
        return not conv.high_byte and len(data) > 25 and data[24] == 16 and data[25] != 0
    if img.format == "TIFF":
        bits = img.tag_v2.get(258, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        return len(bits) > 1 and max(bits) > 8
    return False


def _cv2_to_rgb8(data: bytes, name: str, label: str, conv: Conversion) -> np.ndarray:
    """Full-precision decode with OpenCV (the file's own sample type), then converted band by band."""
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        array = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        raise CorruptImageError(name, f"{label} data cannot be decoded ({e})") from e
    if array is None:
        raise CorruptImageError(
            name, f"neither Pillow nor OpenCV can decode this {label} file (corrupt, or an unsupported variant)"
        )
    # BGR(A) -> RGB(A) band by band: reordering the whole array at once would copy all of it.
    order = {3: [2, 1, 0], 4: [2, 1, 0, 3]}.get(array.shape[2] if array.ndim == 3 else 0)

    def band(r0: int, r1: int) -> np.ndarray:
        rows = array[r0:r1]
        return _to_rgb8(rows if order is None else rows[..., order], conv, name)

    return convert_rows(array.shape[0], array.shape[1], band)


def _pillow_to_rgb8(img: Image.Image, name: str, conv: Conversion) -> np.ndarray:
    """A loaded Pillow image as uint8 RGB, converted a band of rows at a time (see `sapiens2.io.pixels`)."""
    width, height = img.size
    fmt = img.format

    def band(r0: int, r1: int) -> np.ndarray:
        rows = img if (r0, r1) == (0, height) else img.crop((0, r0, width, r1))
        return _to_rgb8(_pillow_to_array(rows, name, conv, fmt), conv, name)

    return convert_rows(height, width, band)


def _pillow_to_array(img: Image.Image, name: str, conv: Conversion, fmt: str | None) -> np.ndarray:
    """The image as a numpy array in one of the layouts `samples_to_rgb8` understands."""
    mode = img.mode
    if mode in ("L", "RGB", "I") or mode.startswith("I;16"):
        if not conv.composite:
            return np.asarray(img)
        # A tRNS colour key (PNG) makes one gray level / colour transparent.
        return _colour_key_to_alpha(np.asarray(img), img.info.get("transparency"))
    if mode in ("1", "LA", "RGBA", "F"):
        return np.asarray(img)
    if mode == "CMYK" and fmt == "JPEG":
        return cmyk_to_rgb_like_opencv(np.asarray(img))
    if mode == "CMYK" and fmt == "TIFF":
        return cmyk_to_rgb_like_libtiff(np.asarray(img))
    has_alpha = conv.composite and (
        mode in ("PA", "RGBa", "La")
        or "transparency" in img.info
        or (mode == "P" and img.palette is not None and img.palette.mode == "RGBA")
    )
    try:
        # P, PA, CMYK, YCbCr, LAB, HSV, RGBX, ... through Pillow's own conversions
        return np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
    except Exception as e:
        reason = f"{fmt} colour mode {mode!r} cannot be converted to RGB ({e})"
        raise UnsupportedImageFormatError(name, reason) from e


def _colour_key_to_alpha(a: np.ndarray, key: object) -> np.ndarray:
    """Append an alpha channel that is 0 where the pixel equals ``key`` (in the array's own units)."""
    if isinstance(key, int) and a.ndim == 2:
        transparent = a == key
    elif isinstance(key, tuple) and a.ndim == 3 and len(key) == a.shape[2]:
        transparent = np.all(a == np.asarray(key, dtype=a.dtype), axis=-1)
    else:
        return a
    opaque = 255 if a.dtype == np.uint8 else 65535
    alpha = np.where(transparent, 0, opaque).astype(a.dtype)
    return np.concatenate([a.reshape(*a.shape[:2], -1), alpha[..., None]], axis=-1)


def _exif_orientation(img: Image.Image, name: str) -> int:
    try:
        value = img.getexif().get(0x0112, 1)
        orientation = int(value)
    except Exception as e:  # corrupt EXIF never fails an image whose pixels decode
        logger.debug("%s: unreadable EXIF, orientation ignored (%s)", name, e)
        return 1
    if orientation not in range(1, 9):
        logger.debug("%s: invalid EXIF orientation %r ignored", name, value)
        return 1
    return orientation


def _apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """Turn the stored pixels upright. Orientation n says how the stored image must be transformed."""
    if orientation == 2:  # mirrored left-right
        return a[:, ::-1]
    if orientation == 3:  # rotated 180
        return a[::-1, ::-1]
    if orientation == 4:  # mirrored top-bottom
        return a[::-1]
    if orientation == 5:  # mirrored about the main diagonal
        return np.swapaxes(a, 0, 1)
    if orientation == 6:  # needs a 90 degree clockwise turn
        return np.swapaxes(a, 0, 1)[:, ::-1]
    if orientation == 7:  # mirrored about the anti-diagonal
        return np.swapaxes(a[::-1, ::-1], 0, 1)
    if orientation == 8:  # needs a 90 degree counter-clockwise turn
        return np.swapaxes(a, 0, 1)[::-1]
    return a


def _check_background(background: tuple[int, int, int] | None) -> None:
    if background is None:
        return
    bg = np.asarray(background, dtype=np.float32).reshape(-1)
    if bg.shape != (3,) or not np.all((bg >= 0) & (bg <= 255)):
        raise ValueError(f"background must be None or three values in 0..255, got {background!r}")


def _to_rgb8(a: np.ndarray, conv: Conversion, name: str) -> np.ndarray:
    try:
        return samples_to_rgb8(a, conv)
    except (ValueError, TypeError) as e:
        raise UnsupportedImageFormatError(name, str(e)) from e
