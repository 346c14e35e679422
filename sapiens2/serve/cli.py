"""`sapiens2 serve`: the HTTP API and web page on the task predictors.

`add_serve_parser(sub)` registers the sub-command. Building the parser imports nothing heavy; torch, FastAPI
and uvicorn are imported when the command runs (they come with `pip install "sapiens2[serve]"`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sapiens2.option_types import height_width, number, whole
from sapiens2.runner.cli import EXIT_USAGE

__all__ = ["add_serve_parser", "build_app"]

DEFAULT_TASKS = "pose,seg,normal"
GPU_BATCH = 8  # --max-batch's default on an accelerator (see BENCHMARKS.md for the CPU's 1)


def add_serve_parser(sub: Any) -> None:
    """Register `sapiens2 serve` on the `sapiens2` sub-parsers."""
    p = sub.add_parser("serve", help="serve the models over HTTP: a REST API and a web page",
                       description="Serve the task models over HTTP: POST /v1/{task} (OpenAPI at /docs), "
                                   "GET /v1/models, /healthz, /metrics, and a web page at /. Concurrent requests "
                                   "for one model are batched into one forward pass.")
    p.add_argument("--tasks", "-t", default=DEFAULT_TASKS, help=f"comma-separated (default {DEFAULT_TASKS})")
    p.add_argument("--model", "-m", action="append", default=[], metavar="[TASK=]MODEL",
                   help="a size for every task (--model 1b) or per task (--model seg=1b --model pose=PATH)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="network precision")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                   "only; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=whole(0), default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--allow-pickle", action="store_true", help="read .pth checkpoints (weights only, no code)")
    p.add_argument("--input-size", metavar="HxW", type=height_width,
                   help="network input (pose: crop) size of a custom model")
    p.add_argument("--detector", default="rtmdet", choices=["rtmdet", "none"],
                   help="pose: person detector (none: the whole photo is one person unless boxes are sent)")
    p.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=True,
                   help="pose: average with the mirrored crop's heatmaps (default on)")
    g = p.add_argument_group("batching")
    g.add_argument("--max-batch", type=whole(1), default=None, metavar="N",
                   help=f"requests gathered into one forward pass (default {GPU_BATCH} on a GPU, 1 on a CPU, where "
                        "batching does not pay; 1 turns batching off)")
    g.add_argument("--max-wait-ms", type=number(0), default=10.0, metavar="MS",
                   help="how long the first request of a batch waits for others (default 10)")
    g.add_argument("--workers", type=whole(1), default=4, metavar="N",
                   help="threads decoding, preparing and writing results (default 4)")
    g = p.add_argument_group("limits")
    g.add_argument("--max-upload-mb", type=number(0, above=True), default=20.0, metavar="MB",
                   help="refuse uploads over this many MiB with 413 (default 20)")
    g.add_argument("--max-pixels", type=whole(1), default=1 << 25, metavar="N",
                   help="refuse images over this many pixels with 413 (default 2^25, 33.5 MP)")
    g.add_argument("--timeout", type=number(0, above=True), default=60.0, metavar="S",
                   help="answer 504 when a request takes longer (default 60 s)")
    g.add_argument("--max-queue", type=whole(1), default=32, metavar="N",
                   help="answer 503 when this many requests already wait for a model (default 32)")
    g.add_argument("--graceful-timeout", type=number(0), default=30.0, metavar="S",
                   help="on Ctrl-C / SIGTERM, wait this long for requests in flight (default 30 s)")
    g.add_argument("--allow-urls", action="store_true",
                   help="also accept a 'url' form field and fetch the image (off: the server fetches nothing)")
    p.set_defaults(func=_cmd_serve)


def build_app(args: argparse.Namespace) -> Any:
    """The app for parsed `serve` options: every task's predictor loaded once (missing weights are reported,
    not fatal). A ValueError is a usage error."""
    from sapiens2.runner.cli import parse_models, parse_tasks
    from sapiens2.serve.app import create_app
    from sapiens2.serve.limits import MIB, Limits
    from sapiens2.serve.models import load_served
    from sapiens2.tasks.models import resolve_device

    tasks = parse_tasks(args.tasks)
    specs = parse_models(args.model, tasks)
    device = resolve_device(args.device)
    max_batch = args.max_batch or (1 if device.type == "cpu" else GPU_BATCH)
    served = load_served(tasks, specs, detector=None if args.detector == "none" else "rtmdet", device=device,
                         dtype=args.dtype, batch_size=max_batch, input_size=args.input_size,
                         allow_pickle=args.allow_pickle, flip_test=args.flip_test)
    for s in served:
        if s.missing:
            print(f"warning: {s.task} is not served: {s.missing}", file=sys.stderr)
    limits = Limits(max_upload_bytes=int(args.max_upload_mb * MIB), max_pixels=args.max_pixels,
                    timeout_s=args.timeout, max_queue=args.max_queue)
    return create_app(served, limits=limits, max_batch=max_batch, max_wait_ms=args.max_wait_ms,
                      workers=args.workers, allow_urls=args.allow_urls)


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as e:
        print(f"error: serving needs FastAPI and uvicorn ({e.name} is not installed): "
              "pip install \"sapiens2[serve]\"", file=sys.stderr)
        return EXIT_USAGE
    import sapiens2

    try:
        app = build_app(args)
    except sapiens2.UnsafeCheckpointError as e:
        print(f"error: {e}\nAdd --allow-pickle to read it weights-only.", file=sys.stderr)
        return EXIT_USAGE
    except (sapiens2.CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    ready = [t for t, s in app.state.sapiens2.served.items() if s.ready]
    print(f"sapiens2 serve: {', '.join(ready) or 'no task ready'} on http://{args.host}:{args.port} "
          f"(page at /, API docs at /docs)", file=sys.stderr)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="info",
                            timeout_graceful_shutdown=args.graceful_timeout)
    uvicorn.Server(config).run()
    return 0
