"""A folder of good photos and a corpus of bad inputs: every good one gets results, every bad one a clear
error in errors.json, and the exit code is 1."""

from __future__ import annotations

import json
import os
import zlib

import cv2
import numpy as np

from tests.runner.conftest import DENSE_SIZE, cli, photo, temp_leftovers, write_photo


def _encoded(ext: str, h: int = 40, w: int = 30) -> bytes:
    ok, buf = cv2.imencode(ext, photo(h, w)[..., ::-1])
    assert ok
    return buf.tobytes()


def _bad_corpus(folder):
    """name -> how it is bad. Files inside `folder`; inputs that must be named on the command line are
    returned separately."""
    folder.mkdir(parents=True)
    jpg, png = _encoded(".jpg"), _encoded(".png")
    corrupt_png = bytearray(png)
    corrupt_png[60:70] = b"\x00" * 10  # inside IDAT: CRC / zlib failure
    files = {
        "empty.jpg": b"",
        "empty.png": b"",
        "truncated.jpg": jpg[: len(jpg) // 2],
        "truncated.png": png[: len(png) // 2],
        "corrupt.png": bytes(corrupt_png),
        "jpeg_header_only.jpg": b"\xff\xd8\xff\xe0" + b"\x00" * 12,
        "png_signature_only.png": b"\x89PNG\r\n\x1a\n",
        "text.jpg": b"this is not a picture\n" * 5,
        "random.jpg": np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "page.jpg": b"<!DOCTYPE html><html><body>404 Not Found</body></html>",
        "data.png": b'{"not": "an image"}',
        "archive.jpg": b"\x1f\x8b\x08\x00" + zlib.compress(b"x" * 100),
        "photo.heic.jpg": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00heicmif1" + b"\x00" * 64,
        "scan.pdf.png": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + b"0" * 64,
        "drawing.svg.png": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>',
        "bad.bmp": b"BM" + b"\x00" * 12 + (40).to_bytes(4, "little") + b"\xff" * 10,
        "bad.webp": b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 8,
        "bomb.png": _encoded(".png", 400, 400),  # 160,000 pixels, over the lowered limit
        "movie.mp4": b"this is no video",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "dir.jpg").mkdir()  # a folder with an image's name (named on the command line below)
    os.symlink(folder / "gone.jpg", folder / "broken_link.jpg")
    return files


def test_bad_inputs_are_reported_and_the_rest_finish(tmp_path, checkpoints, capsys):
    src = tmp_path / "in"
    bad = _bad_corpus(src / "bad")
    good = [write_photo(src / "good" / f"g{i}.jpg", seed=i) for i in range(3)]
    good.append(write_photo(src / "good" / "upper.PNG", seed=9))
    listing = tmp_path / "list.txt"
    listing.write_text(f"{good[0]}\nmissing_from_list.jpg\n# a comment\n")
    (tmp_path / "empty_list.txt").write_text("# nothing\n")
    (tmp_path / "notes.doc").write_text("not an input type")
    (tmp_path / "empty_folder").mkdir()
    out = tmp_path / "out"
    code = cli("seg", src, listing, tmp_path / "empty_list.txt", tmp_path / "notes.doc", tmp_path / "empty_folder",
               src / "bad" / "dir.jpg", tmp_path / "no_such.jpg", str(tmp_path / "nomatch_*.png"),
               "--model", checkpoints["seg"], "--input-size", DENSE_SIZE, "--out", out, "--max-pixels", "20000",
               "--batch-size", "4")
    assert code == 1
    for g in good:
        stem = g.name.split(".")[0]
        assert np.load(out / "good" / f"{stem}_seg.npy").shape == (48, 36)
        assert (out / "good" / f"{stem}_seg.jpg").is_file()
    report = json.loads((out / "errors.json").read_text())
    by_file = {os.path.basename(e["file"].rstrip("/")): e for e in report["errors"]}
    expected = set(bad) | {"dir.jpg", "broken_link.jpg", "missing_from_list.jpg", "empty_list.txt", "notes.doc",
                           "empty_folder", "no_such.jpg", "nomatch_*.png"}
    assert set(by_file) == expected and report["count"] == len(expected) >= 20
    for entry in report["errors"]:
        assert entry["reason"] and entry["stage"] and entry["error_type"]
    assert "empty" in by_file["empty.jpg"]["reason"]
    assert "truncated" in by_file["truncated.jpg"]["reason"].lower()
    assert "HTML" in by_file["page.jpg"]["reason"]
    assert by_file["bomb.png"]["error_type"] == "ImageTooLargeError"
    assert "HEIC" in by_file["photo.heic.jpg"]["reason"]
    assert by_file["missing_from_list.jpg"]["error_type"] == "MissingInput" and "list.txt:2" in by_file[
        "missing_from_list.jpg"]["reason"]
    assert by_file["movie.mp4"]["error_type"] == "VideoError"
    # nothing was written for a bad input, and no half files anywhere
    assert not (out / "bad").exists() or not any((out / "bad").iterdir())
    assert not temp_leftovers(out)
    err = capsys.readouterr().err
    assert "error: " in err and "truncated.jpg" in err and f"failed: {len(expected)}" in err
