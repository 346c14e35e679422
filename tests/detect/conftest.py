"""Detector test setup: the golden fixtures and key layout that sit beside the repository, tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sapiens2.detect.rtmdet import RTMDet, RTMDetConfig

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
CASES = ("rtmdet_tiny_person", "rtmdet_m_topology_w0125_person")


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference data not found beside the repository: shared/{path.relative_to(SHARED)}")
    return path


@pytest.fixture(scope="session")
def m_person_layout() -> dict[str, tuple[tuple[int, ...], str]]:
    """Every state-dict key of the official RTMDet-m person checkpoint, with shape and dtype."""
    raw = json.loads(_need(SHARED / "spec" / "keys_detector" / "rtmdet_m_person.json").read_text())
    return {k: (tuple(shape), dtype) for k, (shape, dtype) in raw.items()}


class FixtureCase:
    """One golden case made by mmdet: weights, input (image and network input), expected outputs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dir = _need(SHARED / "fixtures_detector" / name)
        self.weights_path = self.dir / "weights.safetensors"
        self.weights = load_file(self.weights_path)
        self.inputs = load_file(self.dir / "input.safetensors")
        self.expected = load_file(self.dir / "expected.safetensors")


@pytest.fixture(scope="session", params=CASES)
def fixture_case(request: pytest.FixtureRequest) -> FixtureCase:
    return FixtureCase(request.param)


@pytest.fixture(scope="session")
def topology_case() -> FixtureCase:
    return FixtureCase("rtmdet_m_topology_w0125_person")


# A width-reduced RTMDet-m: same 692 keys as the official checkpoint, about 0.7 M parameters.
SMALL_M = RTMDetConfig(deepen_factor=0.67, widen_factor=0.125, neck_out_channels=32, neck_csp_blocks=2)


@pytest.fixture
def small_model() -> RTMDet:
    torch.manual_seed(0)
    return RTMDet(SMALL_M).eval()
