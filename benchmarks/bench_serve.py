"""`sapiens2 serve` under load: requests/s and p50/p99 latency for 1, 4 and 16 concurrent clients, with dynamic
batching on and off, and the server's peak memory.

Each (size, batching) runs its own server process (`python -m sapiens2.cli serve`, on 127.0.0.1 only, on a
checkpoint of random weights written for the run: speed does not depend on the values); the client is bounded
(exactly `clients` requests in flight, `--requests` in all per level) and runs in this process. Every request
posts the same photo (default: the bundled 512 x 512 one) and asks for `--save` (default png: the 8-bit label
map). "batch" is the mean number of requests per forward pass during the level, from the server's /metrics;
"server peak MiB" is the server process's peak resident memory (VmHWM) so far, read after each level. The
servers of both modes run side by side and the levels alternate between them, so a shared machine's changing
load falls on both alike.

    python benchmarks/bench_serve.py --sizes tiny --input 256x192 --clients 1,4,16 --requests 96
    python benchmarks/bench_serve.py --sizes 0.4b --clients 1,4,16 --requests 1   # official arch: ~25 s a forward on 2 cores
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dense import build_network  # noqa: E402
from common import hw, machine, matmul_peak_gflops, print_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def write_checkpoint(task: str, size: str, input_size: tuple[int, int], folder: Path) -> Path:
    from safetensors.torch import save_file

    net = build_network(task, size, input_size)
    path = folder / f"bench_{size}_{task}.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(task: str, ckpt: Path, input_size: tuple[int, int], max_batch: int, max_wait_ms: float,
                 workers: int, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "sapiens2.cli", "serve", "--tasks", task, "--model", f"{task}={ckpt}",
           "--input-size", f"{input_size[0]}x{input_size[1]}", "--device", "cpu", "--host", "127.0.0.1",
           "--port", str(port), "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms),
           "--workers", str(workers), "--max-queue", "1024", "--timeout", "3600", "--detector", "none"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_ready(proc: subprocess.Popen, url: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError("the server did not start in time")


def batch_totals(url: str, task: str) -> tuple[float, float]:
    """(sum, count) of the server's batch-size histogram."""
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=30).text

    def value(name: str) -> float:
        m = re.search(rf'^{name}{{task="{task}"}} (\S+)$', text, re.M)
        return float(m.group(1)) if m else 0.0

    return value("sapiens2_batch_size_sum"), value("sapiens2_batch_size_count")


def load(url: str, task: str, photo: bytes, save: str, clients: int, total: int) -> tuple[float, list[float]]:
    """Wall seconds and each request's latency, with exactly `clients` requests in flight until `total` are done."""
    import httpx

    latencies: list[float] = []
    lock = threading.Lock()
    issued = [0]
    failures: list[str] = []

    def client() -> None:
        with httpx.Client(base_url=url, timeout=3600) as c:
            while True:
                with lock:
                    if issued[0] >= total:
                        return
                    issued[0] += 1
                t = time.perf_counter()
                r = c.post(f"/v1/{task}", params={"save": save}, files={"image": ("photo.jpg", photo, "image/jpeg")})
                dt = time.perf_counter() - t
                with lock:
                    (latencies.append(dt) if r.status_code == 200 else failures.append(r.text[:200]))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return wall, latencies


def peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="seg", choices=["seg", "normal", "albedo"])
    p.add_argument("--sizes", default="tiny", help="comma-separated: tiny, 0.4b, ...")
    p.add_argument("--input", type=hw, default=None, help="network input HxW (default: tiny 256x192, else 1024x768)")
    p.add_argument("--clients", default="1,4,16")
    p.add_argument("--requests", type=int, default=96, help="requests per level (at least one per client)")
    p.add_argument("--max-batch", type=int, default=16, help="batching on: --max-batch of the server")
    p.add_argument("--max-wait-ms", type=float, default=10.0)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--save", default="png")
    p.add_argument("--photo", type=Path, default=None, help="JPEG to post (default: the bundled photo)")
    p.add_argument("--modes", default="on,off", help="batching on, off or both")
    args = p.parse_args()

    from sapiens2.runner.cli import demo_photo

    photo = (args.photo or demo_photo()).read_bytes()
    levels = [int(c) for c in args.clients.split(",")]
    print(f"machine: {machine()}; matmul peak {matmul_peak_gflops():.0f} GFLOP/s (fp32, 4096^2)", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        for size in args.sizes.split(","):
            input_size = args.input or ((256, 192) if size == "tiny" else (1024, 768))
            ckpt = write_checkpoint(args.task, size, input_size, Path(tmp))
            modes = args.modes.split(",")
            servers: dict[str, tuple[subprocess.Popen, str]] = {}
            try:
                for mode in modes:  # every mode's server up at once; levels alternate between them
                    port = free_port()
                    max_batch = args.max_batch if mode == "on" else 1
                    servers[mode] = (start_server(args.task, ckpt, input_size, max_batch, args.max_wait_ms,
                                                  args.workers, port), f"http://127.0.0.1:{port}")
                for proc, url in servers.values():
                    wait_ready(proc, url, 900)
                    load(url, args.task, photo, args.save, 1, 2)  # warm-up
                for clients in levels:
                    for mode in modes:
                        proc, url = servers[mode]
                        before = batch_totals(url, args.task)
                        total = max(args.requests, clients)
                        wall, lat = load(url, args.task, photo, args.save, clients, total)
                        after = batch_totals(url, args.task)
                        passes = after[1] - before[1]
                        mean_batch = (after[0] - before[0]) / passes if passes else float("nan")
                        ms = np.array(lat) * 1000
                        rows.append([size, f"{input_size[0]}x{input_size[1]}", mode, clients, total,
                                     f"{total / wall:.3g}", f"{np.percentile(ms, 50):.0f}",
                                     f"{np.percentile(ms, 99):.0f}", f"{mean_batch:.2f}",
                                     f"{peak_mib(proc.pid):.0f}"])
                        print(" ".join(map(str, rows[-1])), flush=True)
            finally:
                for proc, _ in servers.values():
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(120)
                    except subprocess.TimeoutExpired:
                        proc.kill()
            ckpt.unlink()
    print_table(["size", "input", "batching", "clients", "requests", "req/s", "p50 ms", "p99 ms", "batch",
                 "server peak MiB"], rows)


if __name__ == "__main__":
    main()
