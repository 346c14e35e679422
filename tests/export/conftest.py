"""Tiny networks of every task and the detector, exported once per session (exporting is the slow part)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from sapiens2.detect.rtmdet import RTMDet, RTMDetConfig  # noqa: E402
from sapiens2.models import PoseHeadConfig, build_model  # noqa: E402
from tests.tasks._dense_tiny import POINTMAP_INPUT, SMALL_INPUT, TINY, tiny_model  # noqa: E402

DETECTOR_INPUT = (64, 64)
POSE_INPUT = (64, 48)


def tiny_network(task: str, seed: int = 0) -> nn.Module:
    """A tiny network of `task` (pose, the dense tasks, pretrain) or the detector (`detect`)."""
    torch.manual_seed(seed)
    if task == "pose":
        return build_model(TINY, "pose", PoseHeadConfig(32, (16, 16), (4, 4), (16,), (1,), num_keypoints=17)).eval()
    if task == "pretrain":
        return build_model(TINY, "pretrain").eval()
    if task == "detect":
        return RTMDet(RTMDetConfig(deepen_factor=0.33, widen_factor=0.125, neck_out_channels=16,
                                   neck_csp_blocks=1)).eval()
    return tiny_model(task, seed)


def input_size(task: str) -> tuple[int, int]:
    return {"pointmap": POINTMAP_INPUT, "detect": DETECTOR_INPUT, "pose": POSE_INPUT}.get(task, SMALL_INPUT)


class Exports:
    """Each (task, format, dtype, dynamic) exported at most once per session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[tuple, Path] = {}
        self.networks: dict[str, nn.Module] = {}

    def network(self, task: str) -> nn.Module:
        if task not in self.networks:
            self.networks[task] = tiny_network(task)
        return self.networks[task]

    def get(self, task: str, fmt: str = "onnx", dtype: str = "fp32", dynamic: bool = False) -> Path:
        from sapiens2.export import export_onnx, export_pt2

        key = (task, fmt, dtype, dynamic)
        if key not in self.files:
            path = self.root / f"{task}_{dtype}{'_dyn' if dynamic else ''}.{fmt}"
            if fmt == "onnx":
                # The graph optimizer only speeds the graph up; one test checks it keeps the outputs.
                export_onnx(self.network(task), path, input_size(task), dtype=dtype, dynamic_batch=dynamic,
                            optimize=False)
            else:
                export_pt2(self.network(task), path, input_size(task), dtype=dtype, dynamic_batch=dynamic)
            self.files[key] = path
        return self.files[key]


@pytest.fixture(scope="session")
def exports(tmp_path_factory) -> Exports:
    return Exports(tmp_path_factory.mktemp("exports"))


def pytest_collection_modifyitems(config, items) -> None:  # noqa: ANN001
    if os.environ.get("SAPIENS2_SLOW_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set SAPIENS2_SLOW_TESTS=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
