"""Tiny pretraining setups: generated images on disk and a config small enough for CPU tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from sapiens2.pretrain.config import PretrainConfig, config_from_dict

TINY_BACKBONE = {"embed_dim": 32, "depth": 2, "num_heads": 2, "n_storage_tokens": 2}
TINY_OBJECTIVE = {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2, "head_out_dim": 64,
                  "head_hidden_dim": 32, "head_bottleneck_dim": 16}


def draw_images(folder: Path, n: int, size: tuple[int, int] = (72, 56), seed: int = 0) -> Path:
    """`n` PNGs of coloured rectangles and discs on a gradient: structure a model can learn."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:] = np.linspace(0, 120, w, dtype=np.uint8)[None, :, None]
        for _ in range(3):
            colour = tuple(int(c) for c in rng.integers(60, 255, 3))
            x, y = int(rng.integers(0, w - 16)), int(rng.integers(0, h - 16))
            if rng.random() < 0.5:
                cv2.rectangle(img, (x, y), (x + 16, y + 12), colour, -1)
            else:
                cv2.circle(img, (x + 8, y + 8), 8, colour, -1)
        cv2.imwrite(str(folder / f"img_{i:03d}.png"), img)
    return folder


def tiny_config(tmp_path: Path, images: Path, **sections) -> PretrainConfig:
    data = {
        "model": {"backbone": dict(TINY_BACKBONE), "rope_dtype": "float32"},
        "objective": dict(TINY_OBJECTIVE),
        "teacher": {"temp_warmup_iters": 5},
        "crops": {"global_size": [64, 48], "local_size": [32, 32], "n_local": 2},
        "data": {"source": [str(images)], "num_workers": 0},
        "optim": {"lr": 1e-3, "warmup_iters": 2, "min_lr": 1e-5},
        "train": {"work_dir": str(tmp_path / "run"), "num_iters": 6, "batch_size": 4, "save_every": 3,
                  "log_every": 3},
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return config_from_dict(data)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return draw_images(tmp_path_factory.mktemp("pretrain_images"), 16)


@pytest.fixture(autouse=True)
def _tiny_models_on_one_thread(one_thread):
    """Every test here runs tiny models: see `one_thread` in tests/conftest.py."""
