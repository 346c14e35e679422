"""`sapiens2 curate`, local engine against Ray engine: images/s of each stage and end to end, and peak memory.

The corpus is generated (smooth random scenes with a red block, a quarter of them planted near copies, at
`--size`); the detector is RTMDet-m and the embedder the Sapiens2 backbone of `--arch` at 224 x 224, both with
random weights (speed does not depend on the values; the person stage therefore keeps what the untrained
detector happens to find, so it is run with `min_score = 0` and `min_area_fraction = 0` to pass every image
on to the later stages). Both models are given as `Loader`s, as the CLI gives them: the local engine builds
them in its process, the Ray engine in each actor (so model building is inside the first batch's time).

Each engine runs in its own child process (peak RSS is a per-process high-water mark). Ray's start is timed
on its own and left out of the end-to-end figure; for Ray, "peak RSS" is the driver's plus the peak of
every Ray process it started (workers, actors, raylet, GCS), summed: an upper bound of what was held at once.
Per-stage images/s is the stage's own compute time (summed over workers for Ray), not wall time.

    python benchmarks/bench_curate.py --images 32 --arch 0.1b --engines local,ray
    python benchmarks/bench_curate.py --stage-costs 768x1024 --arch 0.4b   # ms per image of each stage alone

`--stage-costs HxW`: each stage's own cost per image, models built beforehand, best of 3 runs of one batch of
`--batch` images of that size: the figures the 10^9-image estimate in BENCHMARKS.md starts from.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import hw, machine, matmul_peak_gflops, peak_rss_mib, print_table  # noqa: E402

from sapiens2.curate.config import ClipConfig, ClusterConfig, CurateConfig, EngineConfig, PersonConfig  # noqa: E402
from sapiens2.curate.stages import Loader  # noqa: E402


def corpus(folder: Path, n: int, h: int, w: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        if i % 4 == 3:  # a re-compressed copy of the previous image
            img = cv2.imread(str(folder / f"{i - 1:05d}.jpg"))
            cv2.imwrite(str(folder / f"{i:05d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 40])
            continue
        base = cv2.resize(rng.uniform(40, 210, (6, 6)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        img = np.clip(base[..., None] + rng.uniform(-20, 20, 3), 0, 255).astype(np.uint8)
        y, x = rng.integers(0, h // 2), rng.integers(0, w - w // 5)
        img[y:y + int(h * 0.4), x:x + w // 5] = (30, 30, 220)
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])


def random_detector():
    """RTMDet-m with seeded random weights (a `Loader` target: Ray actors import this module by name)."""
    from sapiens2.detect import PersonDetector, RTMDet, RTMDetConfig

    torch.manual_seed(0)
    return PersonDetector(RTMDet(RTMDetConfig()), score_threshold=0.0)


def random_embedder(arch: str):
    from sapiens2.curate.embed import BackboneEmbedder
    from sapiens2.models import build_model

    torch.manual_seed(0)
    return BackboneEmbedder(build_model(arch, "pretrain"), size=224)


def _descendants_peak_mib(root: int) -> float:
    """Summed peak RSS (VmHWM) of every live process under `root`, read from /proc."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
                parent[int(entry)] = int(fields[1])
            except OSError:
                pass
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        kids = [p for p, pp in parent.items() if pp == pid]
        todo += kids
        for kid in kids:
            try:
                for line in open(f"/proc/{kid}/status"):
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) / 1024
            except OSError:
                pass
    return total


def run_one(args: argparse.Namespace, engine: str) -> dict:
    """One engine on a fresh corpus, in this process; returns the figures."""
    from sapiens2.curate.engine import curate
    from sapiens2.curate.ray_engine import RayEngine
    from sapiens2.curate.sources import collect_items

    h, w = hw(args.size)
    config = CurateConfig(person=PersonConfig(min_score=0.0, min_area_fraction=0.0),
                          cluster=ClusterConfig(levels=(8,), target=args.images // 2),
                          clip=ClipConfig(enabled=False),  # CLIP needs hub weights, not here
                          engine=EngineConfig(batch_size=args.batch))
    out: dict = {"engine": engine}
    if args.threads and engine == "local":
        torch.set_num_threads(args.threads)
    ray = None
    if engine == "ray":
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
        from sapiens2.runner.ray_stages import connect

        t0 = time.perf_counter()
        connect(num_cpus=args.ray_cpus)
        out["ray_start_s"] = time.perf_counter() - t0
        ray = RayEngine(actors=args.actors, cpus_per_actor=args.cpus_per_actor)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        corpus(src, args.images, h, w)
        t0 = time.perf_counter()
        result = curate(collect_items([str(src)]), Path(tmp) / "out", config,
                        detector=Loader.of(random_detector), embedder=Loader.of(random_embedder, args.arch),
                        detector_batched=True, engine=ray)
        out["total_s"] = time.perf_counter() - t0
    out["stages"] = {k: [result.rows[k], result.seconds[k]] for k in result.seconds}
    out["kept"] = result.kept
    out["peak_rss_mib"] = peak_rss_mib()
    if engine == "ray":
        out["workers_peak_rss_mib"] = _descendants_peak_mib(os.getpid())
        import ray as ray_module

        ray_module.shutdown()
    out["manifest"] = [r["reason"] for r in result.table.to_pylist()]
    return out


def stage_costs(args: argparse.Namespace) -> None:
    """Milliseconds per image of each batch stage on its own (models built first), best of 3."""
    from common import best_time

    from sapiens2.curate.phash import phash
    from sapiens2.curate.sources import collect_items
    from sapiens2.curate.stages import Batch
    from sapiens2.io.images import decode_image

    h, w = hw(args.stage_costs)
    detector, embedder = random_detector(), random_embedder(args.arch)
    with tempfile.TemporaryDirectory() as tmp:
        corpus(Path(tmp), args.batch, h, w)
        items = collect_items([tmp])
        data = [it.read_bytes() for it in items]
        work = Batch(items, work_side=1280)
        small = [work.image(i) for i in range(len(items))]
        n = len(items)
        rows = [
            ("decode + shrink to work_side 1280", best_time(lambda: [Batch(items, work_side=1280).image(i)
                                                                     for i in range(n)], 3) / n),
            ("decode only", best_time(lambda: [decode_image(d, "x") for d in data], 3) / n),
            ("person (RTMDet-m, 640 letterbox, batched)", best_time(lambda: detector(small), 3) / n),
            ("phash", best_time(lambda: [phash(im) for im in small], 3) / n),
            (f"embed ({args.arch} @ 224)", best_time(lambda: embedder(small), 3) / n),
        ]
    peak = matmul_peak_gflops()
    print(machine())
    print(f"matmul peak (fp32, 4096^2, this run): {peak:.0f} GFLOP/s; load average {os.getloadavg()[0]:.1f}")
    print(f"{n} JPEGs {h}x{w}, one batch, best of 3")
    print_table(("stage", "ms / image", "images/s per process"),
                [(k, f"{v * 1e3:.1f}", f"{1 / v:.2f}") for k, v in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--size", default="640x512", help="HxW of the generated images")
    ap.add_argument("--arch", default="0.1b", help="Sapiens2 backbone of the embedder")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--engines", default="local,ray")
    ap.add_argument("--ray-cpus", type=int, default=os.cpu_count())
    ap.add_argument("--actors", type=int, default=1)
    ap.add_argument("--cpus-per-actor", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of the local engine (default: torch's; a Ray actor computes on its CPUs)")
    ap.add_argument("--stage-costs", metavar="HxW", help="per-image cost of each stage alone at this image size")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # run this engine here, print JSON (the parent's child)
    args = ap.parse_args()
    if args.stage_costs:
        stage_costs(args)
        return
    if args.one:
        print("JSON " + json.dumps(run_one(args, args.one)))
        return
    peak = matmul_peak_gflops()
    runs = []
    for engine in args.engines.split(","):
        cmd = [sys.executable, __file__, "--one", engine, *sys.argv[1:]]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("JSON ")), None)
        if line is None:
            sys.exit(f"{engine} failed:\n{proc.stderr[-3000:]}")
        runs.append(json.loads(line[5:]))
    h, w = hw(args.size)
    print(machine())
    print(f"matmul peak (fp32, 4096^2, this run): {peak:.0f} GFLOP/s; load average {os.getloadavg()[0]:.1f}")
    print(f"{args.images} images {h}x{w}, batch {args.batch}, embedder {args.arch} @ 224, RTMDet-m @ 640; "
          f"local: {args.threads or torch.get_num_threads()} torch thread(s); "
          f"ray: {args.ray_cpus} CPUs, {args.actors} actor(s) per model stage x {args.cpus_per_actor} CPU")
    names = list(dict.fromkeys(k for r in runs for k in r["stages"]))
    header = ["stage", *[f"{r['engine']} images/s" for r in runs]]
    rows = [[name, *[f"{r['stages'][name][0] / r['stages'][name][1]:.2f}" if name in r["stages"] else "-"
                     for r in runs]] for name in names]
    rows.append(["end to end (wall, with shards and report)",
                 *[f"{args.images / r['total_s']:.2f} ({r['total_s']:.1f} s)" for r in runs]])
    rows.append(["peak RSS MiB (ray: driver + Ray processes)",
                 *[f"{r['peak_rss_mib']:.0f}" + (f" + {r['workers_peak_rss_mib']:.0f}" if "workers_peak_rss_mib" in r
                                                  else "") for r in runs]])
    print_table(header, rows)
    for r in runs:
        if "ray_start_s" in r:
            print(f"ray start (not in the table): {r['ray_start_s']:.1f} s")
    same = len({json.dumps(r["manifest"]) for r in runs}) == 1
    print(f"kept {[r['kept'] for r in runs]}; the engines' manifests' reasons agree: {same}")


if __name__ == "__main__":
    main()
