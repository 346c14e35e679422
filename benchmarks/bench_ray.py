"""`sapiens2 run --engine ray` against the local engine on this machine: images/s, and what Ray's start costs.

Both engines run the same command on the same folder of generated JPEGs (default outputs written: Parquet rows
for ray, files for local). For each Ray setting (actors x batch size) the job runs twice: on `--batch-size`
images ("start": launching the actor pool, loading the network in each actor, the first batch) and on all
images; "marginal img/s" is (all - first) images over the difference in time, the rate once the pool runs.
Ray itself starts once, before the first job (timed apart).

    python benchmarks/bench_ray.py                                    # tiny random seg model, 2 CPUs
    python benchmarks/bench_ray.py --settings 1x4,2x4,1x8 --images 48 --cpus-per-actor 1
    python benchmarks/bench_ray.py --task seg --stage-costs 1080x1920   # CPU ms per photo outside the network
    python benchmarks/bench_ray.py --model 0.4b-random --device cuda --settings 1x8 --gpus-per-actor 1

`--model tiny` (default) and `--model <arch>-random` save a random network to a temporary checkpoint (no
weights needed); anything else is passed to --model as is.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cli import _network, _photos  # noqa: E402
from common import print_table  # noqa: E402

from sapiens2.cli import main as cli_main  # noqa: E402
from sapiens2.runner.ray_stages import connect  # noqa: E402


def _checkpoint(task: str, spec: str, folder: Path) -> str:
    if spec != "tiny" and not spec.endswith("-random"):
        return spec
    net = _network(task, spec, torch.device("cpu"), torch.float32)
    path = folder / f"{task}_{spec}.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    return str(path)


def _timed(argv: list[str]) -> float:
    """Seconds for one command (its own messages swallowed; a failure stops the benchmark)."""
    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()) as err, contextlib.redirect_stdout(io.StringIO()):
        code = cli_main(argv + ["--no-progress"])
    if code != 0:
        raise SystemExit(f"{' '.join(argv)} exited {code}:\n{err.getvalue()}")
    return time.perf_counter() - start


def stage_costs(task: str, size: tuple[int, int], input_size: tuple[int, int], save: str | None = None,
                repeats: int = 3) -> list[list]:
    """CPU milliseconds per photo of each step outside the network (best of `repeats`), one thread: what a
    cluster must supply per image in decode and encode workers. The network is the tiny one (not timed)."""
    from sapiens2.io.images import read_image
    from sapiens2.runner.jobs import Job
    from sapiens2.task_table import TASKS
    from sapiens2.tasks import PREDICTORS
    from sapiens2.runner.sources import Source
    from sapiens2.tasks.outputs import parse_saves

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _photos(root, 1, size)
        path = root / "img0000.jpg"
        net = _network(task, "tiny", torch.device("cpu"), torch.float32)
        kwargs = {"detector": None} if task == "pose" else {"input_size": input_size}
        kinds = parse_saves(save, task)
        job = Job(task, PREDICTORS[task](net, **kwargs), kinds)
        source = Source("image", Path("img0000"), path=path)

        def best(fn) -> tuple[float, object]:
            times, out = [], None
            for _ in range(repeats):
                start = time.perf_counter()
                out = fn()
                times.append(time.perf_counter() - start)
            return 1000 * min(times), out

        decode, image = best(lambda: read_image(path))
        prepare, prepared = best(lambda: job.prepare(image, source))
        raw = job.run([prepared])[0]
        finish, result = best(lambda: job.finish(raw, prepared))
        encode, _ = best(lambda: job.save(result, image, root / "out" / "x"))
    return [[task, ",".join(sorted(kinds)), f"{size[0]}x{size[1]}", f"{decode:.0f}", f"{prepare:.0f}", f"{finish:.0f}", f"{encode:.0f}",
             f"{decode + prepare + encode:.0f}"]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="seg", choices=["pose", "seg", "normal", "albedo"])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--image-size", default="720x540", help="HxW of the generated JPEGs")
    ap.add_argument("--input-size", default="1024x768", help="network input HxW")
    ap.add_argument("--settings", default="1x4,2x4,1x8", help="ACTORSxBATCH, comma-separated")
    ap.add_argument("--cpus-per-actor", type=float, default=1.0)
    ap.add_argument("--gpus-per-actor", type=float, default=0.0)
    ap.add_argument("--shard-rows", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray")
    ap.add_argument("--save", help="--stage-costs: the save kinds (default: the task's)")
    ap.add_argument("--stage-costs", metavar="HxW",
                    help="only time decode / prepare / finish / encode of one photo of this size, on one thread")
    args = ap.parse_args(argv)
    if args.stage_costs:
        size = tuple(int(v) for v in args.stage_costs.split("x"))
        rows = stage_costs(args.task, size, tuple(int(v) for v in args.input_size.split("x")), args.save)
        print(f"# CPU ms per photo, one thread; {os.cpu_count()} CPU cores")
        print_table(["task", "--save", "photo", "decode", "prepare", "finish (CPU)", "encode + write", "CPU work (no finish)"],
                    rows)
        return 0
    settings = [tuple(int(v) for v in s.split("x")) for s in args.settings.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder, first = root / "in", root / "first"
        folder.mkdir()
        _photos(folder, args.images, tuple(int(v) for v in args.image_size.split("x")))
        ckpt = _checkpoint(args.task, args.model, root)
        base = [args.task, "--model", ckpt, "--input-size", args.input_size, "--device", args.device]
        batch0 = settings[0][1]

        local = _timed(base + [str(folder), "--batch-size", str(batch0), "--out", str(root / "local")])
        rows.append(["local", "-", batch0, "-", f"{local:.1f}", f"{args.images / local:.2f}", "-"])

        start = time.perf_counter()
        started = connect(num_cpus=args.num_cpus)
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False
        ray_start = time.perf_counter() - start
        for n, (actors, batch) in enumerate(settings):
            first.mkdir(exist_ok=True)
            for p in sorted(folder.iterdir())[:batch]:
                (first / f"{n}_{p.name}").write_bytes(p.read_bytes())
            ray_args = ["--engine", "ray", "--actors", str(actors), "--batch-size", str(batch), "--shard-rows",
                        str(args.shard_rows), "--cpus-per-actor", str(args.cpus_per_actor), "--gpus-per-actor",
                        str(args.gpus_per_actor)]
            small = _timed(["run", "--tasks"] + base + ray_args + [str(first), "--out", str(root / f"first{n}")])
            full = _timed(["run", "--tasks"] + base + ray_args + [str(folder), "--out", str(root / f"ray{n}")])
            for f in first.iterdir():
                f.unlink()
            marginal = (args.images - batch) / max(1e-9, full - small)
            rows.append(["ray", actors, batch, f"{small:.1f}", f"{full:.1f}", f"{args.images / full:.2f}",
                         f"{marginal:.2f}"])
        if started:
            import ray

            ray.shutdown()
    print(f"# {args.task} {args.model}, {args.images} JPEGs {args.image_size}, input {args.input_size}, "
          f"{args.device}; {os.cpu_count()} CPU cores; Ray started in {ray_start:.1f} s with {args.num_cpus} CPUs; "
          f"{args.cpus_per_actor:g} CPU(s) per actor")
    print_table(["engine", "actors", "batch", "start s", "wall s", "img/s", "marginal img/s"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
