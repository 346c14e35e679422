"""`--resume`: an input is done when every output it should have exists.

No manifest: every writer in `sapiens2.io` renames a complete temporary file into place, so a file that
exists is complete, and the files themselves are the record. An input whose outputs are all present is
skipped; one with any output missing is run again from the start (its present outputs are rewritten,
atomically). Changing `--save`, `--format` or the tasks changes what is expected, so a resumed run with
other options fills in what the new options add. Temporary files left by a killed run (`TEMP_SUFFIX`
in the name) are removed from the output tree when a run resumes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from sapiens2.io.writers import TEMP_SUFFIX

__all__ = ["is_complete", "sweep_temp_files"]


def is_complete(paths: Iterable[Path]) -> bool:
    """True when there is at least one expected output and every one is a non-empty file."""
    found = False
    for p in paths:
        found = True
        try:
            if not p.is_file() or p.stat().st_size == 0:
                return False
        except OSError:
            return False
    return found


def sweep_temp_files(out_dir: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed run left under `out_dir` (recursively); returns them."""
    removed = []
    root = Path(out_dir)
    if not root.is_dir():
        return removed
    for folder, _, files in os.walk(root):
        for name in files:
            if name.startswith(".") and TEMP_SUFFIX in name:
                p = Path(folder) / name
                try:
                    p.unlink()
                    removed.append(p)
                except FileNotFoundError:
                    pass
    return sorted(removed)
