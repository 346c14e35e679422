"""Failures of a batch run: collected from every thread, printed as they happen, written to errors.json."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sapiens2.io.inputs import MissingInput
from sapiens2.io.writers import write_json

__all__ = ["Failures", "describe"]


def describe(exc: BaseException) -> str:
    """A one-line reason: the error's own `reason` when it has one (decode errors), else its message."""
    reason = getattr(exc, "reason", None)
    if reason:
        return str(reason)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text or type(exc).__name__


class Failures:
    """Thread-safe list of what failed: the file, the stage (input, decode, inference, write), the reason."""

    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        self._entries: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._echo = echo

    def add(self, file: str | os.PathLike | None, exc: BaseException | str, stage: str,
            frame: int | None = None) -> None:
        reason = exc if isinstance(exc, str) else describe(exc)
        entry: dict[str, Any] = {"file": None if file is None else os.fspath(file), "stage": stage,
                                 "reason": reason, "error_type": "Error" if isinstance(exc, str) else type(exc).__name__}
        if frame is not None:
            entry["frame"] = frame
        with self._lock:
            self._entries.append(entry)
        if self._echo is not None:
            where = f"{entry['file']}" + (f" (frame {frame})" if frame is not None else "")
            self._echo(f"error: {where}: {reason}")

    def add_missing(self, missing: MissingInput) -> None:
        where = f" (listed at {missing.source})" if missing.source else ""
        self.add(missing.input, f"{missing.reason}{where}", "input")
        with self._lock:
            self._entries[-1]["error_type"] = "MissingInput"

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._entries)

    def write(self, out_dir: str | os.PathLike, name: str = "errors.json") -> Path:
        """`{"count": n, "errors": [...]}`, written (atomically) even when empty so no stale report survives."""
        entries = self.entries
        return write_json(Path(out_dir) / name, {"count": len(entries), "errors": entries})
