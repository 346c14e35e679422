"""AOTInductor packages (`export_pt2(..., aoti=True)`): machine code, so never loaded without the code opt-in;
compiled for real (slow: a C++ build) they match the network and run through a predictor."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest
import torch

from sapiens2 import load
from sapiens2.checkpoint import (
    AOTINDUCTOR,
    CheckpointError,
    ProgramCheckpointError,
    UnsafeCheckpointError,
    detect_format,
)
from sapiens2.export import export_pt2, load_exported
from sapiens2.export.adapter import flatten
from sapiens2.tasks.seg import Segmenter
from sapiens2.weights import load_program, read_state_dict
from tests.conftest import random_photo
from tests.export.conftest import input_size, tiny_network


@pytest.fixture
def package_like(tmp_path):
    """A zip laid out as an AOTInductor package whose "library" would fail loudly if anything loaded it."""
    path = tmp_path / "m.pt2"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("m/archive_format", "pt2")
        z.writestr("m/data/aotinductor/model/model.wrapper.so", b"not a library")
        z.writestr("m/extra/sapiens2.json", "{}")
    return path


def test_a_package_is_recognised_from_its_members_not_its_name(package_like, tmp_path):
    assert detect_format(package_like) == AOTINDUCTOR
    renamed = tmp_path / "weights.pth"
    shutil.copy(package_like, renamed)
    assert detect_format(renamed) == AOTINDUCTOR


def test_a_package_is_refused_unread_without_the_code_opt_in(package_like):
    with pytest.raises(UnsafeCheckpointError, match="allow_code=True"):
        load_exported(package_like)
    with pytest.raises(ProgramCheckpointError, match="AOTInductor package.*allow_code=True"):
        load_program(package_like, allow_code=False)
    with pytest.raises(ProgramCheckpointError, match="AOTInductor package"):
        read_state_dict(package_like, allow_pickle=True)
    with pytest.raises(ProgramCheckpointError, match="AOTInductor package"):
        load(package_like)


def test_a_package_has_no_weights_to_read_even_when_trusted(package_like):
    with pytest.raises(CheckpointError, match="holds no weights to read"):
        read_state_dict(package_like, allow_code=True)


def test_a_damaged_package_is_one_clear_error_when_trusted(package_like):
    with pytest.raises(CheckpointError, match="could not be loaded"):
        load_exported(package_like, allow_code=True)


@pytest.mark.slow  # a C++ build of the whole network: minutes
def test_a_compiled_package_matches_the_network_and_runs_through_a_predictor(tmp_path):
    net, size = tiny_network("seg"), input_size("seg")
    path = export_pt2(net, tmp_path / "seg.pt2", size, aoti=True)
    assert detect_format(path) == AOTINDUCTOR
    with pytest.raises(UnsafeCheckpointError):
        Segmenter(str(path))
    package = load_exported(path, allow_code=True)
    assert package.task == "seg" and package.input_size == size
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(flatten(package(x))[0][0], net(x), rtol=1e-4, atol=1e-4)
    photo = random_photo(80, 60, seed=1)
    got = Segmenter(str(path), allow_code=True)(photo)
    want = Segmenter(net, input_size=size)(photo)
    assert (np.asarray(got.labels) == np.asarray(want.labels)).mean() > 0.999
