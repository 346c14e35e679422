"""Tiny checkpoints, stand-in networks and photo folders for driving `sapiens2` task commands end to end."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from sapiens2.cli import main
from sapiens2.models import (
    BackboneConfig,
    DenseHeadConfig,
    PointmapHeadConfig,
    PoseHeadConfig,
    SegHeadConfig,
    build_model,
)
from sapiens2.models.sapiens1 import Sapiens1Config, V1HeadConfig, build_sapiens1

TINY = BackboneConfig(embed_dim=32, depth=2, num_heads=2)
DENSE_SIZE = "128x96"  # every tiny dense network (the pointmap scale branch included) runs at this input


def _tiny(task: str) -> nn.Module:
    torch.manual_seed(0)
    dense = DenseHeadConfig(32, (16, 16, 16, 16), (8, 8, 8))
    if task == "pose":
        return build_model(TINY, "pose", PoseHeadConfig(32, (16, 16), conv_channels=(16, 16, 8)))
    if task == "seg":
        return build_model(TINY, "seg", SegHeadConfig(32, (16, 16, 16, 16), conv_channels=(16, 16)))
    if task in ("normal", "albedo"):
        return build_model(TINY, task, dense)
    if task == "pointmap":
        head = PointmapHeadConfig(32, (16, 16, 16, 16), (8, 8, 8), scale_conv_channels=(16, 8),
                                  scale_conv_kernels=(1, 1), scale_mlp=(32, 16, 8, 1))
        return build_model(TINY, "pointmap", head)
    if task == "matting":
        return build_model(TINY, "matting", DenseHeadConfig(32, (16, 16, 16, 16), (8, 8, 8), out_channels=4))
    if task == "depth":
        cfg = Sapiens1Config(embed_dim=64, depth=2, num_heads=1, mlp_hidden=128, pos_grid=(8, 6))
        return build_sapiens1(cfg, "depth", V1HeadConfig(64, (8, 8), (8,), 1))
    raise ValueError(task)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """task -> a safetensors file of a tiny random network (loaded by `sapiens2.load` from its shapes)."""
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for task in ("pose", "seg", "normal", "pointmap", "albedo", "matting", "depth"):
        net = _tiny(task).eval()
        path = root / f"tiny_{task}.safetensors"
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
        out[task] = path
    return out


@pytest.fixture(autouse=True)
def _offline(offline_homes):
    """Every test here runs with no weights anywhere and the hub offline."""


def photo(h: int = 48, w: int = 36, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(40, 140, (h, w, 3), np.uint8)  # never saturated: only the drawn "person" is
    cv2.rectangle(img, (w // 4, h // 6), (3 * w // 4, 5 * h // 6), (220, 40, 40), -1)
    return img


def write_photo(path: Path, h: int = 48, w: int = 36, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok = cv2.imwrite(str(path), photo(h, w, seed)[..., ::-1])
    assert ok, path
    return path


def cli(*args: str | Path) -> int:
    return main([str(a) for a in args] + ["--no-progress"])


def temp_leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if "sapiens2-tmp" in p.name]


class CenterPose(nn.Module):
    """Stand-in pose network, cheap at the 1024 x 768 crop size: every keypoint's heatmap peaks at the
    centre of the crop, so keypoints come back at the centre of each person's box."""

    task = "pose"

    def __init__(self, keypoints: int = 308) -> None:
        super().__init__()
        self.decode_head = nn.Module()
        self.decode_head.conv_pose = nn.Conv2d(1, keypoints, 1)
        self.keypoints = keypoints
        self.calls = 0
        self.input_sizes: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Heatmaps at a quarter of the input (whatever crop size it is fed), peaking at the crop's centre."""
        self.calls += 1
        self.input_sizes.append(tuple(x.shape[-2:]))
        b, (h, w) = x.shape[0], (x.shape[-2] // 4, x.shape[-1] // 4)
        ys, xs = torch.meshgrid(torch.arange(float(h)), torch.arange(float(w)), indexing="ij")
        cy, cx = (h - 1) / 2, (w - 1) / 2
        g = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 2.0**2))
        return g.expand(b, self.keypoints, h, w).clone().to(x.dtype)


@pytest.fixture
def stand_in_pose(request, monkeypatch):
    """Make `--model anything` load `CenterPose` for pose (other tasks load normally). 308 keypoints, or
    `@pytest.mark.parametrize("stand_in_pose", [17], indirect=True)` for fewer (faster to decode)."""
    from sapiens2.tasks import models

    real = models.load_network
    net = CenterPose(getattr(request, "param", 308))

    def fake(task, spec, device=None, dtype=None, allow_pickle=False, allow_code=False):
        if task == "pose":
            return net
        return real(task, spec, device, dtype, allow_pickle, allow_code)

    monkeypatch.setattr(models, "load_network", fake)
    return net


def colour_detector(image: np.ndarray) -> np.ndarray:
    """Stand-in person detector: one box around each saturated red, green or blue blob."""
    img = image.astype(np.int32)
    boxes = []
    for c in range(3):
        others = [o for o in range(3) if o != c]
        mask = ((img[..., c] > 150) & (img[..., others[0]] < 90) & (img[..., others[1]] < 90)).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        for i in range(1, n):
            x, y, w, h, area = stats[i]
            if area >= 30:
                boxes.append([x, y, x + w - 1, y + h - 1, 0.9])
    return np.asarray(boxes, np.float32).reshape(-1, 5)


@pytest.fixture
def stand_in_detector(monkeypatch):
    """`--detector rtmdet` gets `colour_detector` instead of the RTMDet weights."""
    from sapiens2.tasks import pose

    monkeypatch.setattr(pose, "_default_detector", lambda device, allow_code=False: colour_detector)


__all__ = ["DENSE_SIZE", "CenterPose", "cli", "photo", "replace", "temp_leftovers", "write_photo"]
