"""A real server on 127.0.0.1 (uvicorn in a thread) around tiny task networks, and gated stand-ins."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from sapiens2.serve.app import create_app  # noqa: E402
from sapiens2.serve.limits import Limits  # noqa: E402
from sapiens2.serve.models import Served  # noqa: E402
from tests.runner.conftest import _tiny  # noqa: E402

INPUT = (128, 96)  # every tiny network runs at this input (pose: this crop)


def tiny_predictor(task: str, **options: Any) -> Any:
    """The task's predictor around its tiny random network (pose: no detector: whole photo or given boxes)."""
    from sapiens2.tasks import PREDICTORS

    if task == "pose":
        return PREDICTORS[task](_tiny(task), None, input_size=INPUT, **options)
    return PREDICTORS[task](_tiny(task), input_size=INPUT, **options)


class LiveServer:
    """uvicorn serving `app` on a free port of 127.0.0.1 in a background thread."""

    def __init__(self, app: Any, graceful_s: float = 10.0) -> None:
        self.app = app
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=graceful_s)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def state(self) -> Any:
        return self.app.state.sapiens2


def serve(served: list[Served], **options: Any) -> LiveServer:
    return LiveServer(create_app(served, **options))


class Gate(nn.Module):
    """Wraps a network: each forward waits until the gate is open, and is counted (with its batch size)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.task = net.task
        self.opened = threading.Event()
        self.entered = threading.Event()
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> Any:
        self.entered.set()
        if not self.opened.wait(30):
            raise RuntimeError("gate never opened")
        self.batches.append(x.shape[0])
        return self.net(x)


@pytest.fixture(autouse=True)
def _offline(offline_homes):
    """Every test here runs with no weights anywhere and the hub offline."""


@pytest.fixture(scope="module")
def every_task() -> Iterator[LiveServer]:
    """Every task on its tiny network, batching on (up to 8 requests, 50 ms), default limits."""
    from sapiens2.task_table import TASKS

    served = [Served(t, f"tiny-{t}", tiny_predictor(t)) for t in TASKS]
    with serve(served, max_batch=8, max_wait_ms=50, limits=Limits(max_upload_bytes=2 << 20, max_pixels=1 << 20)) as s:
        yield s


__all__ = ["INPUT", "Gate", "LiveServer", "Limits", "Served", "serve", "tiny_predictor"]
