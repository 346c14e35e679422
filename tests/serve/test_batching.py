"""The batcher and the metrics on their own: gathering, isolation of a failing item, draining, the queue bound,
cancellation; Prometheus text."""

from __future__ import annotations

import threading
import time

import pytest

from sapiens2.serve.batching import Batcher, QueueFull
from sapiens2.serve.metrics import Metrics


class Recorder:
    """A `run` that records its batches, fails on items equal to 'bad', and can be held shut."""

    def __init__(self) -> None:
        self.batches: list[list] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, items: list) -> list:
        self.entered.set()
        self.gate.wait(10)
        self.batches.append(list(items))
        if "bad" in items:
            raise ValueError("bad item")
        return [f"out-{x}" for x in items]


def test_gathers_what_arrives_within_the_wait_up_to_max_batch():
    run = Recorder()
    run.gate.clear()
    b = Batcher("t", run, max_batch=3, max_wait_s=0.05)
    first = b.submit(0)
    assert run.entered.wait(5)  # item 0 is in a pass of its own (nothing else had arrived in time)
    futures = [b.submit(i) for i in range(1, 6)]
    run.gate.set()
    assert [f.result(5) for f in [first, *futures]] == [f"out-{i}" for i in range(6)]
    assert run.batches == [[0], [1, 2, 3], [4, 5]]
    b.close()


def test_a_failing_item_fails_alone():
    run = Recorder()
    run.gate.clear()
    sizes: list[int] = []
    b = Batcher("t", run, max_batch=8, max_wait_s=0.05, on_batch=sizes.append)
    hold = b.submit("x")
    assert run.entered.wait(5)
    futures = {x: b.submit(x) for x in ("a", "bad", "c")}
    run.gate.set()
    assert hold.result(5) == "out-x"
    assert futures["a"].result(5) == "out-a" and futures["c"].result(5) == "out-c"
    with pytest.raises(ValueError, match="bad item"):
        futures["bad"].result(5)
    assert run.batches[1] == ["a", "bad", "c"] and run.batches[2:] == [["a"], ["bad"], ["c"]]
    assert sizes == [1, 1, 1]  # the failed pass of 3 is not counted; its retries are
    b.close()


def test_queue_bound_cancellation_and_close_drains():
    run = Recorder()
    run.gate.clear()
    b = Batcher("t", run, max_batch=1, max_wait_s=0, max_queue=2)
    running = b.submit(0)
    assert run.entered.wait(5)
    waiting = [b.submit(1), b.submit(2)]
    assert b.depth == 2
    with pytest.raises(QueueFull, match="max-queue"):
        b.submit(3)
    assert waiting[0].cancel()  # its client gave up: the place is free at once
    assert b.depth == 1
    late = b.submit(4)
    closer = threading.Thread(target=b.close)
    closer.start()
    time.sleep(0.05)
    with pytest.raises(RuntimeError, match="shut down"):
        b.submit(5)
    run.gate.set()
    closer.join(5)
    assert [running.result(0), waiting[1].result(0), late.result(0)] == ["out-0", "out-2", "out-4"]
    assert run.batches == [[0], [2], [4]]  # the cancelled one never reached the network


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        Batcher("t", Recorder(), max_batch=0)


def test_metrics_text():
    m = Metrics()
    m.request("seg", 200, 0.02)
    m.request("seg", 413, 0.001)
    for n in (1, 3, 3):
        m.batch("seg", n)
    m.gauge("sapiens2_queue_depth", "waiting", lambda: {"seg": 2})
    text = m.render()
    assert 'sapiens2_requests_total{task="seg",status="200"} 1' in text
    assert 'sapiens2_request_seconds_bucket{task="seg",le="0.005"} 1' in text
    assert 'sapiens2_request_seconds_bucket{task="seg",le="+Inf"} 2' in text
    assert 'sapiens2_batch_size_bucket{task="seg",le="2"} 1' in text
    assert 'sapiens2_batch_size_bucket{task="seg",le="4"} 3' in text
    assert 'sapiens2_batch_size_sum{task="seg"} 7' in text
    assert 'sapiens2_queue_depth{task="seg"} 2' in text
    assert m.batch_sizes("seg") == (3, pytest.approx(7 / 3))
