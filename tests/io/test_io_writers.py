"""Atomic writers: after a failure at any point the target holds its old content or the complete new
content, and no temporary file is left behind."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sapiens2.io import writers
from sapiens2.io.images import ImageDecodeError, TruncatedImageError, read_image
from sapiens2.io.inputs import MissingInput
from sapiens2.io.writers import (
    TEMP_SUFFIX,
    atomic_open,
    json_text,
    remove_stale_temp_files,
    write_bytes,
    write_errors_json,
    write_image,
    write_json,
    write_npy,
    write_npz,
    write_text,
)

OLD = b"old content, complete\n"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(TEMP_SUFFIX))


@pytest.fixture
def target(tmp_path: Path) -> Path:
    p = tmp_path / "out" / "result.bin"
    p.parent.mkdir()
    p.write_bytes(OLD)
    return p


# ------------------------------------------------------------------------------------- happy paths


def test_write_bytes_creates_parents_and_returns_path(tmp_path: Path) -> None:
    p = tmp_path / "a" / "b" / "c.bin"
    assert write_bytes(p, b"\x00\x01") == p
    assert p.read_bytes() == b"\x00\x01"
    assert leftovers(p.parent) == []


def test_write_text_keeps_newlines_as_given(tmp_path: Path) -> None:
    p = write_text(tmp_path / "t.txt", "é\r\nline\n")
    assert p.read_bytes() == "é\r\nline\n".encode()


def test_new_file_permissions_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_bytes(tmp_path / "new.bin", b"x")
        with open(tmp_path / "plain.bin", "wb") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.bin").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "new.bin").stat().st_mode) == stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode)


def test_overwrite_keeps_existing_permissions(target: Path) -> None:
    target.chmod(0o604)
    write_bytes(target, b"new")
    assert stat.S_IMODE(target.stat().st_mode) == 0o604 and target.read_bytes() == b"new"


def test_write_json_converts_numpy_and_paths(tmp_path: Path) -> None:
    p = write_json(tmp_path / "r.json", {"k": np.arange(3), "s": np.float32(0.5), "n": np.int64(7),
                                         "b": np.bool_(True), "p": Path("x/y.jpg"), "u": "ü"})
    assert json.loads(p.read_text("utf-8")) == {"k": [0, 1, 2], "s": 0.5, "n": 7, "b": True, "p": "x/y.jpg", "u": "ü"}
    assert p.read_text("utf-8").endswith("}\n") and "ü" in p.read_text("utf-8")


def test_write_json_refuses_nan_before_touching_the_file(target: Path) -> None:
    with pytest.raises(ValueError):
        write_json(target, {"score": float("nan")})
    with pytest.raises(TypeError):
        write_json(target, {"x": object()})
    assert target.read_bytes() == OLD and leftovers(target.parent) == []


def test_npy_and_npz_round_trip(tmp_path: Path) -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(np.load(write_npy(tmp_path / "a.npy", a)), a)
    for compressed in (True, False):
        p = write_npz(tmp_path / f"b{compressed}.npz", compressed=compressed, a=a, b=np.array([1, 2]))
        with np.load(p) as z:
            assert sorted(z.files) == ["a", "b"]
            np.testing.assert_array_equal(z["a"], a)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["a.npy", "bFalse.npz", "bTrue.npz"]


def test_npz_name_is_used_as_given(tmp_path: Path) -> None:
    p = write_npz(tmp_path / "points.bin", a=np.zeros(2))
    assert p.exists() and not (tmp_path / "points.bin.npz").exists()


def test_images_round_trip_through_read_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "x.png", rgb)), rgb)
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "x.webp", rgb)).shape, rgb.shape)
    smooth = np.zeros((32, 32, 3), np.uint8)
    smooth[..., 0] = 200
    smooth[..., 2] = 40
    out = read_image(write_image(tmp_path / "x.JPG", smooth, jpeg_quality=98))
    assert np.abs(out.astype(int) - smooth).max() <= 2  # channel order survives (RGB in, RGB out)


def test_image_16bit_gray_and_rgba(tmp_path: Path) -> None:
    depth = np.array([[0, 257, 65535]], np.uint16)
    assert read_image(write_image(tmp_path / "d.png", depth))[..., 0].tolist() == [[0, 1, 255]]
    rgba = np.array([[[10, 20, 30, 255], [10, 20, 30, 0]]], np.uint8)
    composited = read_image(write_image(tmp_path / "a.png", rgba), background=(0, 0, 0))
    assert composited.tolist() == [[[10, 20, 30], [0, 0, 0]]]


@pytest.mark.parametrize(
    ("name", "image"),
    [
        ("x.gif", np.zeros((4, 4, 3), np.uint8)),
        ("x", np.zeros((4, 4, 3), np.uint8)),
        ("x.jpg", np.zeros((4, 4, 4), np.uint8)),
        ("x.jpg", np.zeros((4, 4), np.uint16)),
        ("x.png", np.zeros((4, 4, 3), np.float32)),
        ("x.png", np.zeros((4, 4, 5), np.uint8)),
        ("x.png", np.zeros((0, 4, 3), np.uint8)),
    ],
)
def test_bad_image_requests_write_nothing(tmp_path: Path, name: str, image: np.ndarray) -> None:
    with pytest.raises(ValueError):
        write_image(tmp_path / name, image)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------- failure mid-write


def test_exception_mid_write_keeps_old_content(target: Path) -> None:
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_open(target) as f:
            f.write(b"new content, first half ")
            raise RuntimeError("disk on fire")
    assert target.read_bytes() == OLD
    assert leftovers(target.parent) == []


def test_ctrl_c_mid_write_keeps_old_content(target: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(target, "w") as f:
            f.write("half")
            raise KeyboardInterrupt
    assert target.read_bytes() == OLD and leftovers(target.parent) == []


def test_absent_target_stays_absent_after_failure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with atomic_open(tmp_path / "never.json", "w") as f:
            f.write("{")
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_npy_failing_inside_the_encoder(target: Path) -> None:
    """np.save refuses object arrays; whichever layer notices, nothing half-written remains."""
    with pytest.raises(ValueError):
        write_npy(target, np.array([{"a": 1}, None], dtype=object))
    assert target.read_bytes() == OLD and leftovers(target.parent) == []


def test_npz_writer_crashing_after_some_bytes(target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_savez = np.savez_compressed

    def crashing_savez(f, **arrays):
        real_savez(f, **arrays)  # the whole archive is written to the temp file ...
        raise OSError(errno.EIO, "I/O error")  # ... then the device fails

    monkeypatch.setattr(np, "savez_compressed", crashing_savez)
    with pytest.raises(OSError):
        write_npz(target, a=np.ones(1000))
    assert target.read_bytes() == OLD and leftovers(target.parent) == []


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_os_failures_keep_old_content(target: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    def boom(*args, **kwargs):
        raise OSError(errno.ENOSPC, f"{failing} failed")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(OSError, match=f"{failing} failed"):
        write_bytes(target, b"new complete content")
    monkeypatch.undo()
    assert target.read_bytes() == OLD
    assert leftovers(target.parent) == []


# The children load writers.py on its own: the package import (torch) would cost seconds.
_LOAD = r"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("writers_under_test", sys.argv[2])
writers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(writers)
"""

_FULL_DISK_CHILD = _LOAD + r"""
import errno, resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit, write() then fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
try:
    writers.write_bytes(sys.argv[1], b"n" * 300_000)
except OSError as e:
    sys.exit(3 if e.errno == errno.EFBIG else 4)
sys.exit(0)
"""

_KILLED_CHILD = _LOAD + r"""
import os
with writers.atomic_open(sys.argv[1]) as f:
    f.write(b"new" * 100_000)
    f.flush()
    os.kill(os.getpid(), 9)  # die hard, mid-write, before the rename
"""


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file-size limits")
def test_real_write_failure_part_way_keeps_old_content(target: Path) -> None:
    """The kernel refuses the write after 100 kB of 300 kB, as a full disk would."""
    proc = subprocess.run([sys.executable, "-c", _FULL_DISK_CHILD, str(target), writers.__file__], timeout=60)
    assert proc.returncode == 3
    assert target.read_bytes() == OLD
    assert leftovers(target.parent) == []


def test_target_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "x.json").mkdir()
    with pytest.raises(OSError):
        write_json(tmp_path / "x.json", {})
    assert leftovers(tmp_path) == [] and (tmp_path / "x.json").is_dir()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_hard_kill_mid_write_never_damages_the_target(target: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _KILLED_CHILD, str(target), writers.__file__], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == OLD
    # A killed process cannot clean up: its temp file is recognisable, and swept away on request.
    (left,) = leftovers(target.parent)
    assert left.startswith(".result.bin.")
    assert remove_stale_temp_files(target.parent, older_than_s=3600) == []  # might still be in use
    assert remove_stale_temp_files(target.parent, older_than_s=0) == [target.parent / left]
    assert leftovers(target.parent) == [] and target.read_bytes() == OLD


def test_stale_sweep_leaves_other_files_alone(tmp_path: Path) -> None:
    keep = [tmp_path / "a.sapiens2-tmp", tmp_path / ".a.tmp", tmp_path / "data.json"]
    for p in keep:
        p.write_bytes(b"")
    old = time.time() - 10
    for p in keep:
        os.utime(p, (old, old))
    assert remove_stale_temp_files(tmp_path, older_than_s=0) == []
    assert all(p.exists() for p in keep)


def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    p = tmp_path / "live.bin"
    a, b = b"A" * 200_000, b"B" * 300_000
    write_bytes(p, a)
    stop = threading.Event()
    seen: set[int] = set()
    bad: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            data = p.read_bytes()
            seen.add(len(data))
            if data not in (a, b):
                bad.append(len(data))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(40):
            write_bytes(p, b if i % 2 == 0 else a)
    finally:
        stop.set()
        t.join()
    assert bad == []
    assert leftovers(tmp_path) == []


def test_bad_modes_refused(tmp_path: Path) -> None:
    for mode in ("ab", "r+b", "r"):
        with pytest.raises(ValueError):
            with atomic_open(tmp_path / "x", mode):
                pass
    assert list(tmp_path.iterdir()) == []


def test_long_file_names(tmp_path: Path) -> None:
    name = "n" * 250 + ".png"
    write_bytes(tmp_path / name, b"x")
    assert (tmp_path / name).read_bytes() == b"x"


# ------------------------------------------------------------------------------------ error reports


def test_write_errors_json(tmp_path: Path) -> None:
    errors = [
        TruncatedImageError("in/a.jpg", "JPEG file is truncated"),
        ("in/b.png", ValueError("model refused the crop")),
        ("in/c.png", ImageDecodeError("in/c.png", "generic failure")),
        MissingInput("gone.jpg", "no such file or folder", "list.txt:3"),
        FileNotFoundError(errno.ENOENT, "No such file or directory", "in/d.jpg"),
        ("in/e.png", RuntimeError()),
    ]
    p = write_errors_json(errors, tmp_path / "run")
    assert p == tmp_path / "run" / "errors.json"
    report = json.loads(p.read_text())
    assert report == {
        "count": 6,
        "errors": [
            {"file": "in/a.jpg", "reason": "JPEG file is truncated", "error_type": "TruncatedImageError"},
            {"file": "in/b.png", "reason": "model refused the crop", "error_type": "ValueError"},
            {"file": "in/c.png", "reason": "generic failure", "error_type": "ImageDecodeError"},
            {"file": "gone.jpg", "reason": "no such file or folder", "error_type": "MissingInput",
             "source": "list.txt:3"},
            {"file": "in/d.jpg", "reason": "No such file or directory", "error_type": "FileNotFoundError"},
            {"file": "in/e.png", "reason": "RuntimeError()", "error_type": "RuntimeError"},
        ],
    }


def test_empty_error_report_replaces_a_stale_one(tmp_path: Path) -> None:
    write_errors_json([TruncatedImageError("a.jpg", "cut")], tmp_path)
    write_errors_json([], tmp_path)
    assert json.loads((tmp_path / "errors.json").read_text()) == {"count": 0, "errors": []}


def test_error_report_refuses_unknown_items_before_writing(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_errors_json(["just a string"], tmp_path)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ names that are not UTF-8

_RAW_NAMES = [b"caf\xe9.jpg", b"\xff\xfe.png", b"ok_\xc3\xa9_then_\x80.jpg", b"plain.jpg"]


@pytest.mark.parametrize("raw", _RAW_NAMES)
def test_non_utf8_names_round_trip_through_errors_json(tmp_path: Path, raw: bytes) -> None:
    name = os.fsdecode(raw)  # what os.listdir / pathlib hand out: undecodable bytes as U+DCxx
    path = write_errors_json([(name, ValueError("bad")), (Path(name), OSError("x"))], tmp_path)
    data = path.read_bytes()
    data.decode("utf-8")  # valid UTF-8 ...
    report = json.loads(data)  # ... and valid JSON
    assert [os.fsencode(e["file"]) for e in report["errors"]] == [raw, raw]


def test_non_utf8_names_are_written_as_json_escapes(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9 \xc3\xa9.jpg")
    text = write_json(tmp_path / "p.json", {"file": name, name: 1}).read_text(encoding="utf-8")
    assert "caf\\udce9 \u00e9.jpg" in text  # the bad byte escaped, real UTF-8 left readable
    back = json.loads(text)
    assert back == {"file": name, name: 1}


def test_bytes_names_in_error_reports(tmp_path: Path) -> None:
    err = OSError(2, "No such file or directory", b"gone\xff.jpg")
    report = json.loads(write_errors_json([err], tmp_path).read_text(encoding="utf-8"))
    assert os.fsencode(report["errors"][0]["file"]) == b"gone\xff.jpg"


def test_json_text_is_what_write_json_writes(tmp_path: Path) -> None:
    obj = {"a": [1, 2.5, None], "name": os.fsdecode(b"\xfe")}
    assert write_json(tmp_path / "x.json", obj).read_text(encoding="utf-8") == json_text(obj) + "\n"
