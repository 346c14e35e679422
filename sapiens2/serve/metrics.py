"""Prometheus text metrics: requests, latency, batch sizes, queue depth (no client library needed).

Counters and histograms are kept under one lock (requests finish on the event loop, batches on the batching
threads); gauges such as the queue depth are read from their owners when `/metrics` is scraped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

__all__ = ["BATCH_BUCKETS", "LATENCY_BUCKETS", "Metrics"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class _Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        for i, edge in enumerate(self.buckets):
            if value <= edge:
                self.counts[i] += 1
        self.total += value
        self.n += 1


def _labels(pairs: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items())
    return f"{{{inner}}}" if inner else ""


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Metrics:
    """The server's counters. `gauge(name, help, read)` adds a value read at scrape time, per task."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str], int] = {}
        self._latency: dict[str, _Histogram] = {}
        self._batches: dict[str, _Histogram] = {}
        self._gauges: list[tuple[str, str, Callable[[], dict[str, float]]]] = []

    def request(self, task: str, status: int, seconds: float) -> None:
        """One answered request (any status) and how long it took."""
        with self._lock:
            key = (task, str(status))
            self._requests[key] = self._requests.get(key, 0) + 1
            self._latency.setdefault(task, _Histogram(LATENCY_BUCKETS)).observe(seconds)

    def batch(self, task: str, size: int) -> None:
        """One forward pass of `size` gathered requests."""
        with self._lock:
            self._batches.setdefault(task, _Histogram(BATCH_BUCKETS)).observe(size)

    def gauge(self, name: str, help_text: str, read: Callable[[], dict[str, float]]) -> None:
        self._gauges.append((name, help_text, read))

    def batch_sizes(self, task: str) -> tuple[int, float]:
        """(forward passes, mean requests per pass) so far for `task`."""
        with self._lock:
            h = self._batches.get(task)
            return (0, 0.0) if h is None or not h.n else (h.n, h.total / h.n)

    def render(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        lines = ["# HELP sapiens2_requests_total Requests answered, by task and HTTP status.",
                 "# TYPE sapiens2_requests_total counter"]
        with self._lock:
            for (task, status), n in sorted(self._requests.items()):
                lines.append(f"sapiens2_requests_total{_labels({'task': task, 'status': status})} {n}")
            lines += self._histogram("sapiens2_request_seconds", "Time from request to response, seconds.",
                                     self._latency)
            lines += self._histogram("sapiens2_batch_size", "Requests gathered into one forward pass.",
                                     self._batches)
        for name, help_text, read in self._gauges:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            for task, value in sorted(read().items()):
                lines.append(f"{name}{_labels({'task': task} if task else {})} {_number(value)}")
        return "\n".join(lines) + "\n"

    @staticmethod
    def _histogram(name: str, help_text: str, by_task: dict[str, _Histogram]) -> list[str]:
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for task, h in sorted(by_task.items()):
            for edge, count in zip(h.buckets, h.counts):
                lines.append(f"{name}_bucket{_labels({'task': task, 'le': _number(edge)})} {count}")
            lines.append(f"{name}_bucket{_labels({'task': task, 'le': '+Inf'})} {h.n}")
            lines.append(f"{name}_sum{_labels({'task': task})} {_number(h.total)}")
            lines.append(f"{name}_count{_labels({'task': task})} {h.n}")
        return lines
