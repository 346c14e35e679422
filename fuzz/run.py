"""Fuzz one target: `python -m fuzz.run --target images --runs 20000` (or `--seconds 300`).

Engines: `atheris` (coverage-guided libFuzzer, `pip install -e .[fuzz]`; stops at the first crash and
writes it to `--crash-dir`) or `random` (plain Python: mutates the seeds and every input that gave a new
kind of outcome, records every crash and goes on). `auto`, the default, picks atheris when it is installed.
Prints one summary line of JSON: target, engine, execs, clean (typed errors), accepted, crashes, seconds.
The exit status is 1 when anything crashed. Targets and what counts as clean: `fuzz/targets.py`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fuzz.mutate import mutate
from fuzz.targets import TARGETS, Target

_CORPUS_LIMIT = 2000


@dataclass
class Report:
    target: str
    engine: str
    execs: int = 0
    clean: int = 0
    accepted: int = 0
    crashes: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    slowest_s: float = 0.0
    coverage: dict[str, int] | None = None  # libFuzzer's count of covered edges and features (atheris)


def _signature(outcome: BaseException | None) -> str:
    """A coarse kind of outcome (exception type and message shape) that makes an input worth keeping."""
    if outcome is None:
        return "ok"
    text = re.sub(r"\d+", "#", str(outcome).split(": ", 1)[-1])[:60]
    return f"{type(outcome).__name__}:{text}"


def _crash_key(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    return f"{type(error).__name__} at {where}"


def fuzz_random(target: Target, runs: int | None, seconds: float | None, seed: int = 0,
                crash_dir: Path | None = None) -> Report:
    """Plain-Python fuzzing; every crash is recorded once per (type, place), with its input saved."""
    rng = random.Random(seed)
    clean = target.clean()
    corpus = list(target.seeds())
    seen: set[str] = set()
    report = Report(target.name, "random")
    start = time.perf_counter()
    i = 0
    while (runs is None or i < runs) and (seconds is None or time.perf_counter() - start < seconds):
        data = corpus[i] if i < len(corpus) and i < 64 else mutate(rng.choice(corpus), rng, corpus)
        i += 1
        t0 = time.perf_counter()
        outcome: BaseException | None = None
        try:
            target.run(data)
            report.accepted += 1
        except clean as e:
            report.clean += 1
            outcome = e
        except (Exception, RecursionError, MemoryError) as e:  # noqa: BLE001 - that is what we look for
            key = _crash_key(e)
            if key not in {c["kind"] for c in report.crashes}:
                saved = _save(crash_dir, target.name, data)
                report.crashes.append({"kind": key, "error": f"{type(e).__name__}: {str(e)[:200]}",
                                       "input": str(saved) if saved else None, "size": len(data)})
            outcome = e
        report.slowest_s = max(report.slowest_s, time.perf_counter() - t0)
        report.execs += 1
        sig = _signature(outcome)
        if sig not in seen and len(corpus) < _CORPUS_LIMIT:
            seen.add(sig)
            corpus.append(data)
    report.seconds = round(time.perf_counter() - start, 1)
    report.slowest_s = round(report.slowest_s, 3)
    return report


def _save(crash_dir: Path | None, name: str, data: bytes) -> Path | None:
    if crash_dir is None:
        return None
    crash_dir.mkdir(parents=True, exist_ok=True)
    path = crash_dir / f"{name}-{hashlib.sha1(data).hexdigest()[:12]}"
    path.write_bytes(data)
    return path


def fuzz_atheris(target: Target, runs: int | None, seconds: float | None, seed: int,
                 crash_dir: Path) -> Report:
    """Coverage-guided fuzzing in a child process (libFuzzer exits the process when it is done)."""
    crash_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sapiens2-fuzz-corpus-") as corpus:
        for k, data in enumerate(target.seeds()):
            Path(corpus, f"seed-{k}").write_bytes(data)
        stats = Path(corpus) / "stats.json"
        args = [f"-seed={seed + 1}", f"-artifact_prefix={crash_dir}/{target.name}-", "-rss_limit_mb=4096",
                "-timeout=30", "-print_final_stats=1"]
        args += [f"-runs={runs}"] if runs is not None else []
        args += [f"-max_total_time={int(seconds)}"] if seconds is not None else []
        start = time.perf_counter()
        child = subprocess.run([sys.executable, "-m", "fuzz.run", "--child", target.name, str(stats), *args,
                                corpus], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        log = child.stdout + child.stderr
        counts = json.loads(stats.read_text()) if stats.is_file() else {}
    report = Report(target.name, "atheris", seconds=round(time.perf_counter() - start, 1))
    slowest = re.search(r"slowest_unit_time_sec:\s+(\d+)", log)
    report.slowest_s = float(slowest.group(1)) if slowest else 0.0  # whole seconds, as libFuzzer counts
    done = re.search(r"Done (\d+) runs", log) or re.search(r"stat::number_of_executed_units: (\d+)", log)
    report.execs = int(done.group(1)) if done else counts.get("execs", 0)
    report.clean, report.accepted = counts.get("clean", 0), counts.get("accepted", 0)
    coverage = re.findall(r"cov: (\d+) ft: (\d+)", log)
    if coverage:
        report.coverage = {"edges": int(coverage[-1][0]), "features": int(coverage[-1][1])}
    if child.returncode != 0:
        error = re.search(r"Uncaught Python exception: ===\s*\n(.*)", log)
        saved = re.search(r"Test unit written to (\S+)", log)
        report.crashes.append({"kind": "uncaught exception", "error": error.group(1) if error else log[-500:],
                               "input": saved.group(1) if saved else None, "log_tail": log[-2000:]})
    return report


def _child(name: str, stats: Path, libfuzzer_args: list[str]) -> None:
    """The atheris side: instrument the package, then let libFuzzer drive the target."""
    import atheris

    with atheris.instrument_imports(include=["sapiens2"]):
        import sapiens2  # noqa: F401
        import sapiens2.io.images  # noqa: F401
        import sapiens2.metrics.readers  # noqa: F401
        import sapiens2.tasks.pose  # noqa: F401
        import sapiens2.weights  # noqa: F401
    target = TARGETS[name]
    clean = target.clean()
    counts = {"execs": 0, "clean": 0, "accepted": 0}

    def one_input(data: bytes) -> None:
        counts["execs"] += 1
        try:
            target.run(data)
            counts["accepted"] += 1
        except clean:
            counts["clean"] += 1
        if counts["execs"] % 100 == 0:
            stats.write_text(json.dumps(counts))

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.3:
            return mutate(data, rng, [], max_size)
        return atheris.Mutate(data, max_size)

    atheris.Setup([sys.argv[0], *libfuzzer_args], one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


def _have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        _child(argv[1], Path(argv[2]), argv[3:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, choices=sorted(TARGETS))
    parser.add_argument("--runs", type=int, default=None, help="stop after this many inputs")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    parser.add_argument("--engine", choices=("auto", "atheris", "random"), default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crash-dir", type=Path, default=Path("fuzz-crashes"),
                        help="where inputs that crashed are written (default ./fuzz-crashes)")
    args = parser.parse_args(argv)
    if args.runs is None and args.seconds is None:
        args.runs = 10000
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if _have_atheris() else "random"
    target = TARGETS[args.target]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if engine == "atheris":
        report = fuzz_atheris(target, args.runs, args.seconds, args.seed, args.crash_dir.resolve())
    else:
        report = fuzz_random(target, args.runs, args.seconds, args.seed, args.crash_dir)
    print(json.dumps({k: v for k, v in asdict(report).items() if v or k not in ("crashes", "coverage")},
                     default=str))
    return 1 if report.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
