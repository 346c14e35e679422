"""Peak memory of `sapiens2.io.decode_image` per decoded pixel, for each colour mode.

Each file is decoded in a fresh process. The process's peak resident memory is reset (Linux
`/proc/self/clear_refs`) after the imports and after the file's bytes are read, so the figure is what the
decode itself adds: the decoder's samples, the conversion's temporaries and the H x W x 3 uint8 result
(3 bytes per pixel of it). The encoded file (column "file B/px") is held as well and is not included.

    python benchmarks/bench_decode_memory.py                    # 4000 x 3000 pixels (12 MP)
    python benchmarks/bench_decode_memory.py --size 2000x1500 --modes rgba,rgba-composite
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import hw, print_table  # noqa: E402


def _pil(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _cv2(ext: str, a: np.ndarray, params: tuple[int, ...] = ()) -> bytes:
    return cv2.imencode(ext, a, list(params))[1].tobytes()


def _gradient(h: int, w: int, channels: int) -> np.ndarray:
    """A smooth picture with some noise: compresses like a photo, not like a flat colour."""
    y, x = np.mgrid[0:h, 0:w]
    base = (x * 255 // max(1, w - 1) + y * 255 // max(1, h - 1)) // 2
    noise = np.random.default_rng(0).integers(0, 16, (h, w), dtype=np.int64)
    return np.stack([(base + noise + 40 * c) % 256 for c in range(channels)], -1).astype(np.uint8)


def make(mode: str, h: int, w: int) -> tuple[bytes, dict]:
    """(encoded file, decode_image keyword arguments) for one colour mode."""
    g = _gradient(h, w, 4)
    deflate = (cv2.IMWRITE_TIFF_COMPRESSION, 8)
    files = {
        "L (png)": lambda: (_pil(Image.fromarray(g[..., 0]), "PNG"), {}),
        "1 (png)": lambda: (_pil(Image.fromarray(g[..., 0] > 127), "PNG"), {}),
        "RGB (jpeg)": lambda: (_pil(Image.fromarray(g[..., :3]), "JPEG", quality=90), {}),
        "RGB (png)": lambda: (_pil(Image.fromarray(g[..., :3]), "PNG"), {}),
        "RGBA (png)": lambda: (_pil(Image.fromarray(g, "RGBA"), "PNG"), {}),
        "RGBA (png) + background": lambda: (_pil(Image.fromarray(g, "RGBA"), "PNG"), {"background": (0, 0, 0)}),
        "P (png, transparency)": lambda: (_pil(Image.fromarray(g[..., 0]).convert("P"), "PNG", transparency=0), {}),
        "CMYK (jpeg)": lambda: (_pil(Image.fromarray(g, "CMYK"), "JPEG", quality=90), {}),
        "16-bit gray (png)": lambda: (_cv2(".png", g[..., 0].astype(np.uint16) * 257), {}),
        "16-bit RGB (png)": lambda: (_cv2(".png", g[..., :3].astype(np.uint16) * 257), {}),
        "16-bit RGBA (png) + background": lambda: (_cv2(".png", g.astype(np.uint16) * 257), {"background": (0, 0, 0)}),
        "16-bit RGB (tiff)": lambda: (_cv2(".tif", g[..., :3].astype(np.uint16) * 257, deflate), {}),
        "float gray (tiff)": lambda: (_pil(Image.fromarray(g[..., 0].astype(np.float32) / 255, "F"), "TIFF",
                                           compression="tiff_adobe_deflate"), {}),
        "float RGB (tiff)": lambda: (_cv2(".tif", g[..., :3].astype(np.float32) / 255, deflate), {}),
    }
    if mode not in files:
        raise SystemExit(f"unknown mode {mode!r}; choose from: {', '.join(files)}")
    return files[mode]()


MODES = ("L (png)", "1 (png)", "RGB (jpeg)", "RGB (png)", "RGBA (png)", "RGBA (png) + background",
         "P (png, transparency)", "CMYK (jpeg)", "16-bit gray (png)", "16-bit RGB (png)",
         "16-bit RGBA (png) + background", "16-bit RGB (tiff)", "float gray (tiff)", "float RGB (tiff)")

_CHILD = r"""
import json, resource, sys
from sapiens2.io.images import decode_image

def hwm_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

def rss_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

path, kwargs = sys.argv[1], json.loads(sys.argv[2])
data = open(path, "rb").read()
before = rss_bytes()
try:
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
    reset = True
except OSError:
    reset = False
out = decode_image(data, path, max_pixels=None, **kwargs)
print(json.dumps({"peak": hwm_bytes() - before, "reset": reset, "shape": list(out.shape)}))
"""


def measure(data: bytes, kwargs: dict, workdir: Path) -> dict:
    path = workdir / "image.bin"
    path.write_bytes(data)
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(path), json.dumps(kwargs)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=hw, default=(3000, 4000), help="image HxW (default 3000x4000, 12 MP)")
    parser.add_argument("--modes", default="", help="comma list of mode names (default: all); see the table")
    args = parser.parse_args()
    h, w = args.size
    modes = [m.strip() for m in args.modes.split(",")] if args.modes else list(MODES)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            data, kwargs = make(mode, h, w)
            r = measure(data, kwargs, Path(tmp))
            if "error" in r:
                rows.append([mode, f"{len(data) / (h * w):.2f}", "failed", r["error"][:80]])
                continue
            note = "" if r["reset"] else "peak not reset: an upper bound"
            rows.append([mode, f"{len(data) / (h * w):.2f}", f"{r['peak'] / (h * w):.1f}", note])
    print(f"# decode_image peak memory per pixel, {w}x{h} = {h * w / 1e6:.0f} MP, each in its own process")
    print_table(["colour mode (format)", "file B/px", "decode peak B/px", "note"], rows)


if __name__ == "__main__":
    main()
