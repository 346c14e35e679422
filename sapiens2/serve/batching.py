"""Dynamic batching: one worker thread per model gathers concurrent requests into one `run` call.

A request is queued with `submit` and answered through a `concurrent.futures.Future`. The worker takes the
first waiting request, then keeps gathering until `max_batch` are in hand or `max_wait_s` has passed since
it took the first, and calls the predictor's `run` on all of them: one forward pass (or as few as the
predictor's own batch size allows). The network runs on this thread, never on the event loop. A request
cancelled while it waited (its client timed out) is dropped before the forward pass. When a batch fails,
its requests are run one at a time so that only the culprit gets the error.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

__all__ = ["Batcher", "QueueFull"]

_STOP = object()


class QueueFull(Exception):
    """More requests are waiting for this model than the server allows."""


class Batcher:
    """Gathers items for `run` (a predictor's batched step) on its own thread.

    `max_batch=1` turns batching off: every request is its own forward pass, in arrival order.
    `on_batch(size)` is told the size of every forward pass (for metrics).
    """

    def __init__(self, name: str, run: Callable[[list[Any]], Sequence[Any]], *, max_batch: int = 8,
                 max_wait_s: float = 0.01, max_queue: int = 32,
                 on_batch: Callable[[int], None] | None = None) -> None:
        if int(max_batch) < 1 or int(max_queue) < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch and max_queue must be >= 1 and max_wait_s >= 0, got {max_batch}, "
                             f"{max_queue}, {max_wait_s}")
        self.name, self._run = name, run
        self.max_batch, self.max_wait_s, self.max_queue = int(max_batch), float(max_wait_s), int(max_queue)
        self._on_batch = on_batch
        self._queue: queue.Queue[Any] = queue.Queue()
        self._lock = threading.Lock()
        self._waiting = 0
        self._busy = 0
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"sapiens2-batch-{name}", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Requests waiting for the network (not counting the batch running now)."""
        return self._waiting

    @property
    def busy(self) -> int:
        """Requests in the forward pass running now."""
        return self._busy

    def submit(self, item: Any) -> Future:
        """Queue one prepared item; its future gets the raw network output for it."""
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the {self.name} batcher is shut down")
            if self._waiting >= self.max_queue:
                raise QueueFull(f"{self._waiting} requests are already waiting for the {self.name} model "
                                f"(the server's --max-queue is {self.max_queue}); retry shortly")
            self._waiting += 1
            self._queue.put((item, future))
        future.add_done_callback(self._forget_if_cancelled)
        return future

    def _forget_if_cancelled(self, future: Future) -> None:
        # A request whose client gave up frees its place in the queue at once, not when the worker reaches it.
        if future.cancelled():
            with self._lock:
                self._waiting -= 1

    def close(self, timeout: float | None = None) -> None:
        """Answer everything already queued, then stop the worker."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)

    # ------------------------------------------------------------------ the worker
    def _take(self, block: bool, timeout: float | None = None) -> Any:
        """The next live entry (marked running, so it can no longer be cancelled), or the stop sign; entries
        cancelled while waiting are skipped. Raises queue.Empty as `queue.Queue.get` does."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            entry = self._queue.get(block and (left is None or left > 0), left)
            if entry is _STOP:
                return entry
            with self._lock:
                if entry[1].set_running_or_notify_cancel():
                    self._waiting -= 1
                    return entry

    def _gather(self, first: Any) -> tuple[list[Any], bool]:
        """The first entry and what else arrives in time; and whether the stop sign was met."""
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                entry = self._take(True, remaining) if remaining > 0 else self._take(False)
            except queue.Empty:
                break
            if entry is _STOP:
                return batch, True
            batch.append(entry)
        return batch, False

    def _loop(self) -> None:
        stopping = False
        while True:
            if stopping:
                try:
                    first = self._take(False)
                except queue.Empty:
                    return
            else:
                first = self._take(True)
                if first is _STOP:
                    stopping = True
                    continue
            batch, stop_seen = self._gather(first)
            stopping = stopping or stop_seen
            self._busy = len(batch)
            try:
                self._answer(batch)
            finally:
                self._busy = 0

    def _answer(self, live: list[tuple[Any, Future]]) -> None:
        try:
            outputs = list(self._run([item for item, _ in live]))
            if len(outputs) != len(live):
                raise RuntimeError(f"run gave {len(outputs)} outputs for {len(live)} inputs")
        except BaseException as e:  # noqa: BLE001 - every waiting client must be answered
            if len(live) == 1:
                live[0][1].set_exception(e)
                return
            for one in live:  # only the culprit fails
                self._answer([one])
            return
        if self._on_batch is not None:
            self._on_batch(len(live))
        for (_, fut), out in zip(live, outputs):
            fut.set_result(out)
