"""Input folders holding symbolic links that cannot be followed: reported, never silently dropped."""

from __future__ import annotations

import os

import numpy as np
import pytest

from sapiens2.io.inputs import expand_inputs
from sapiens2.io.writers import write_image


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links on this system")
def test_a_self_referencing_link_in_a_folder_is_reported(tmp_path):
    write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    os.symlink(tmp_path / "loop.jpg", tmp_path / "loop.jpg")
    found = expand_inputs([str(tmp_path)])
    assert [p.name for p in found.images] == ["a.png"]
    (missing,) = found.missing
    assert missing.input.endswith("loop.jpg") and "cannot follow symbolic link" in missing.reason
