"""Shared test setup: offline hub, the reference data beside the repo, and synthetic checkpoints."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
_ST_DTYPES = {"float32": ("F32", 4), "bfloat16": ("BF16", 2), "float16": ("F16", 2)}


@pytest.fixture(scope="session")
def shared() -> Path:
    """The reference data (spec, fixtures) that sits beside the repository."""
    if not SHARED.is_dir():
        pytest.skip("../shared (reference fixtures and spec) is not beside the repository")
    return SHARED


def random_photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """An H x W x 3 uint8 RGB image of uniform noise: a photo for tests where the content does not matter."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray (2 CPUs) for every test that needs it: starting Ray costs ~20 s, so it starts once, on
    first use, and stops at the end of the session."""
    pytest.importorskip("ray")
    import ray.data

    from sapiens2.runner.ray_stages import connect

    started = connect(num_cpus=2)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    if started:
        ray.shutdown()


@pytest.fixture
def one_thread():
    """Torch on one thread for the test. Tiny models run several times faster on one thread than on two
    (thread sync dominates), and far faster when the cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_sparse_safetensors(layout: dict[str, tuple[list[int], str]], path: Path) -> Path:
    """A valid safetensors file with the given keys/shapes/dtypes whose data is all zeros.

    The data section is a hole (`truncate`), so even a 5B-parameter layout costs no disk and no time.
    """
    header, offset = {}, 0
    for key, (shape, dtype) in layout.items():
        code, size = _ST_DTYPES[dtype]
        n = size
        for s in shape:
            n *= s
        header[key] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        f.truncate(8 + len(raw) + offset)
    return path


def official_layout(shared: Path, stem: str) -> dict[str, tuple[list[int], str]]:
    """`keys/<stem>.json` (Sapiens v1 stems, `sapiens_*`: `keys_v1/`): key -> (shape, dtype) of an official
    checkpoint."""
    folder = "keys_v1" if stem.startswith("sapiens_") else "keys"
    return {k: (v[0], v[1]) for k, v in json.loads((shared / "spec" / folder / f"{stem}.json").read_text()).items()}


@pytest.fixture
def offline_homes(tmp_path, monkeypatch):
    """No real weights anywhere: an empty checkpoint root and Hugging Face cache, offline."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SAPIENS_CHECKPOINT_ROOT", str(tmp_path / "no_weights"))
    monkeypatch.setenv("SAPIENS_V1_CHECKPOINT_ROOT", str(tmp_path / "no_weights_v1"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
