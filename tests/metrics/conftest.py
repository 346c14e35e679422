"""The spec's data files (keypoint and class tables), from the `shared` fixture of tests/conftest.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def spec_data(shared: Path) -> Path:
    path = shared / "spec" / "data"
    if not path.is_dir():
        pytest.skip("the spec data files are not in ../shared/spec/data")
    return path


@pytest.fixture(scope="session")
def keypoints308_spec(spec_data: Path) -> dict:
    return json.loads((spec_data / "keypoints308.json").read_text())


@pytest.fixture(scope="session")
def coco17_spec(spec_data: Path) -> dict:
    return json.loads((spec_data / "coco17.json").read_text())


@pytest.fixture(scope="session")
def seg29_spec(spec_data: Path) -> dict:
    return json.loads((spec_data / "seg29.json").read_text())
