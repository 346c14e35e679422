"""Shared fixtures: the spec's data files live next to the repository, in ../shared/spec/data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SPEC_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "spec" / "data"


@pytest.fixture(scope="session")
def spec_data() -> Path:
    if not SPEC_DATA.is_dir():
        pytest.skip("the shared spec data (../shared/spec/data) is not available")
    return SPEC_DATA


@pytest.fixture(scope="session")
def keypoints308_spec(spec_data: Path) -> dict:
    return json.loads((spec_data / "keypoints308.json").read_text())


@pytest.fixture(scope="session")
def coco17_spec(spec_data: Path) -> dict:
    return json.loads((spec_data / "coco17.json").read_text())


@pytest.fixture(scope="session")
def seg29_spec(spec_data: Path) -> dict:
    return json.loads((spec_data / "seg29.json").read_text())
