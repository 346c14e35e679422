"""A progress bar (tqdm: items, items/s, ETA) that any thread may update, and messages that do not break it."""

from __future__ import annotations

import sys
import threading

__all__ = ["Progress"]


class Progress:
    """`enabled=None` shows the bar only on a terminal. Messages always go to stderr."""

    def __init__(self, total: int | None, enabled: bool | None = None, unit: str = "img") -> None:
        self._lock = threading.Lock()
        self._bar = None
        show = sys.stderr.isatty() if enabled is None else enabled
        if show:
            from tqdm import tqdm

            self._bar = tqdm(total=total or None, unit=unit, dynamic_ncols=True, smoothing=0.1, file=sys.stderr)
        self.count = 0

    def update(self, n: int = 1) -> None:
        with self._lock:
            self.count += n
            if self._bar is not None:
                self._bar.update(n)

    def add_total(self, n: int) -> None:
        with self._lock:
            if self._bar is not None and n:
                self._bar.total = (self._bar.total or 0) + n
                self._bar.refresh()

    def write(self, message: str) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.write(message, file=sys.stderr)
            else:
                print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
