"""Every malformed safetensors header is a `CorruptCheckpointError` naming the file, never a traceback."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

import sapiens2
from sapiens2.checkpoint import CorruptCheckpointError, SafetensorsFile


def _write(path: Path, header: bytes | dict, data: bytes = b"\0" * 64) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def _entry(shape=(2, 2), offsets=(0, 16), dtype="F32") -> dict:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def _refused(path: Path, match: str) -> None:
    for read in (SafetensorsFile, sapiens2.inspect, sapiens2.load):
        with pytest.raises(CorruptCheckpointError, match=match) as e:
            read(path)
        assert str(e.value).startswith(f"{path}: ")


def test_a_header_nested_200k_deep(tmp_path):
    raw = b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    _refused(_write(tmp_path / "deep.safetensors", raw), "nests too deeply")


@pytest.mark.parametrize("offsets", [(-16, 0), (0, -16), (16, 0), (-8, 8)])
def test_negative_or_reversed_data_offsets(tmp_path, offsets):
    path = _write(tmp_path / "neg.safetensors", {"w": _entry(offsets=offsets)})
    _refused(path, r"tensor 'w' has data_offsets .*expected \[start, end\] with 0 <= start <= end")


def test_overlapping_tensors(tmp_path):
    path = _write(tmp_path / "overlap.safetensors", {"a": _entry(offsets=(0, 16)), "b": _entry(offsets=(8, 24))})
    _refused(path, r"tensor 'b' at data_offsets \[8, 24\] overlaps the tensor before it")


def test_a_hole_between_tensors(tmp_path):
    path = _write(tmp_path / "hole.safetensors", {"a": _entry(offsets=(0, 16)), "b": _entry(offsets=(32, 48))})
    _refused(path, r"tensor 'b' .* leaves bytes 16\.\.32 unused")


def test_negative_shapes_are_refused_by_inspect(tmp_path):
    # -2 * -2 * 4 bytes = 16: the byte count alone would have accepted it.
    path = _write(tmp_path / "negshape.safetensors", {"w": _entry(shape=(-2, -2))})
    _refused(path, r"tensor 'w' has shape \[-2, -2\]: expected a list of non-negative integers")


@pytest.mark.parametrize("entry, match", [
    (5, "malformed header entry for 'w'"),
    (["F32"], "malformed header entry for 'w'"),
    ({**_entry(), "extra": 1}, "expected exactly dtype, shape and data_offsets"),
    ({"dtype": "F32", "shape": [4]}, "expected exactly dtype, shape and data_offsets"),
    (_entry(dtype=5), "unsupported dtype 5"),
    (_entry(dtype=["F32"]), r"unsupported dtype \['F32'\]"),
    (_entry(dtype="Q99"), "unsupported dtype 'Q99'"),
    ({**_entry(), "shape": "2x2"}, "has shape '2x2'"),
    ({**_entry(), "shape": [2.0, 2]}, "has shape"),
    ({**_entry(), "shape": [True, 4]}, "has shape"),
    ({**_entry(), "shape": [2, None]}, "has shape"),
    ({**_entry(), "data_offsets": [0]}, "has data_offsets"),
    ({**_entry(), "data_offsets": "0-16"}, "has data_offsets"),
    ({**_entry(), "data_offsets": [0.0, 16]}, "has data_offsets"),
    (_entry(shape=(3, 3)), r"claims 16 bytes but \(3, 3\)|claims 16 bytes but \[3, 3\]"),
])
def test_header_fields_of_the_wrong_type(tmp_path, entry, match):
    _refused(_write(tmp_path / "typed.safetensors", {"w": entry}), match)


def test_a_float_overflowing_shape(tmp_path):
    raw = b'{"w": {"dtype": "F32", "shape": [1e400], "data_offsets": [0, 16]}}'
    _refused(_write(tmp_path / "inf.safetensors", raw), "has shape")


@pytest.mark.parametrize("meta", [["a"], {"a": 1}, "text"])
def test_malformed_metadata(tmp_path, meta):
    path = _write(tmp_path / "meta.safetensors", {"__metadata__": meta, "w": _entry()})
    _refused(path, "__metadata__ must map names to strings")


@pytest.mark.parametrize("raw, match", [
    (b'{"w": 1, "w": 2}', "duplicate key 'w'"),
    (b'{"w": \xff}', "not valid JSON"),
    (b"{" + b" " * 7, "not valid JSON"),
])
def test_headers_that_are_not_an_object_of_entries(tmp_path, raw, match):
    _refused(_write(tmp_path / "shape.safetensors", raw), match)


def test_a_header_that_is_not_an_object(tmp_path):
    path = _write(tmp_path / "list.safetensors", b"[1, 2]")
    with pytest.raises(CorruptCheckpointError, match="its header is a JSON list, not an object"):
        SafetensorsFile(path)
    with pytest.raises(sapiens2.CheckpointError, match="not a safetensors file"):
        sapiens2.load(path)


def test_a_valid_file_still_reads(tmp_path):
    path = _write(tmp_path / "ok.safetensors", {"__metadata__": {"task": "pose"}, "a": _entry(),
                                                 "b": _entry(shape=(0,), offsets=(16, 16)),
                                                 "c": _entry(shape=(4,), offsets=(16, 24), dtype="U16")})
    st = SafetensorsFile(path)
    assert st.metadata == {"task": "pose"} and st.shapes == {"a": (2, 2), "b": (0,), "c": (4,)}
    tensors = dict(st.iter_tensors())
    assert tensors["c"].dtype == torch.uint16 and tensors["b"].numel() == 0
