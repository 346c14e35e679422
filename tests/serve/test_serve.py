"""`sapiens2 serve` end to end over real HTTP on 127.0.0.1: endpoints, results equal to the predictors' own,
batching under concurrency, every limit and error status, fuzzed uploads, graceful shutdown, the CLI."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from sapiens2.serve.limits import Limits
from sapiens2.serve.models import Served, load_served
from sapiens2.task_table import TASKS
from sapiens2.tasks.outputs import FILES
from tests.runner.conftest import _tiny, photo
from tests.serve.conftest import INPUT, Gate, serve, tiny_predictor

pytestmark = pytest.mark.usefixtures("one_thread")


def jpeg(h: int = 48, w: int = 36, seed: int = 0) -> bytes:
    ok, data = cv2.imencode(".jpg", photo(h, w, seed)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return data.tobytes()


def png(h: int = 48, w: int = 36, seed: int = 0) -> bytes:
    ok, data = cv2.imencode(".png", photo(h, w, seed)[..., ::-1])
    assert ok
    return data.tobytes()


def upload(data: bytes, name: str = "a.jpg", kind: str = "image/jpeg") -> dict:
    return {"image": (name, data, kind)}


def decoded(f: dict) -> bytes:
    return base64.b64decode(f["base64"])


def error_of(r: httpx.Response, status: int, code: str | None = None) -> str:
    """The JSON error's message, after checking the status and the error's shape."""
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert err["status"] == status and err["message"]
    if code is not None:
        assert err["code"] == code, err
    return err["message"]


# ------------------------------------------------------------------------------------------------ endpoints


def test_page_models_health_openapi_and_metrics(every_task):
    with httpx.Client(base_url=every_task.url) as c:
        page = c.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "/static/app.js" in page.text
        for asset in ("/static/app.js", "/static/style.css"):
            assert c.get(asset).status_code == 200
        demo = c.get("/demo.jpg")
        assert demo.status_code == 200 and demo.content[:2] == b"\xff\xd8"
        assert c.get("/healthz").json() == {"status": "ok", "tasks": {t: "ready" for t in TASKS}}
        models = c.get("/v1/models").json()
        assert [m["task"] for m in models["tasks"]] == list(TASKS)
        assert all(m["ready"] and m["input_size"] == list(INPUT) for m in models["tasks"])
        assert models["batching"] == {"max_batch": 8, "max_wait_ms": 50.0}
        assert models["limits"]["max_pixels"] == 1 << 20 and models["image_urls"] is False
        schema = c.get("/openapi.json").json()
        params = {p["name"] for p in schema["paths"]["/v1/{task}"]["post"]["parameters"]}
        assert {"task", "save", "vis", "format", "kpt_thr", "file"} <= params
        metrics = c.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        for name in ("sapiens2_requests_total", "sapiens2_request_seconds", "sapiens2_batch_size",
                     "sapiens2_queue_depth", "sapiens2_in_flight"):
            assert f"# TYPE {name}" in metrics.text


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_answers_the_cli_files_of_the_predictor(every_task, task, tmp_path):
    """Every file of every save kind, byte-identical to what `result.save` writes for the direct call."""
    image = photo(40, 30, seed=3)
    kinds = sorted(TASKS[task].saves)
    with httpx.Client(base_url=every_task.url, timeout=60) as c:
        r = c.post(f"/v1/{task}", params={"save": ",".join(kinds)}, files=upload(png(40, 30, seed=3), "p.png"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task"] == task and body["image_size"] == [40, 30] and body["model"] == f"tiny-{task}"
    direct = every_task.state.served[task].predictor(image)
    options = {"keypoint_format": None, "kpt_thr": 0.3} if task == "pose" else {}
    written = direct.save(tmp_path / "p", image, kinds, **options)
    expected = {p.name.removeprefix("p"): p.read_bytes() for p in written}
    if task == "pose":
        record = json.loads(expected.pop("_pose.json"))
        assert body["result"] == record | {"image": "p.png"}
    else:
        assert body["result"] is None
    assert set(body["files"]) == set(expected)
    for suffix, data in expected.items():
        got = decoded(body["files"][suffix])
        if suffix.endswith(".jpg"):  # the same picture (JPEG bytes may differ only by encoder state)
            a = cv2.imdecode(np.frombuffer(got, np.uint8), cv2.IMREAD_COLOR)
            b = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            assert a.shape == b.shape and np.abs(a.astype(int) - b).max() <= 2
        elif suffix.endswith(".npz"):
            with np.load(io.BytesIO(got)) as x, np.load(io.BytesIO(data)) as y:
                assert set(x) == set(y)
                for k in x:
                    np.testing.assert_allclose(x[k], y[k], atol=1e-4)
        else:
            assert got == data, suffix
        assert body["files"][suffix]["bytes"] == len(got)


def test_pose_options_formats_boxes_and_one_file(every_task):
    with httpx.Client(base_url=every_task.url, timeout=60) as c:
        coco = c.post("/v1/pose", params={"format": "coco17", "kpt_thr": 0.5}, files=upload(jpeg()))
        assert coco.status_code == 200, coco.text
        rec = coco.json()["result"]
        assert rec["keypoint_format"] == "coco17" and rec["num_keypoints"] == 17 and rec["kpt_thr_used"] == 0.5
        assert len(rec["instances"][0]["keypoints"]) == 17 and rec["box_source"] == "whole image"
        given = c.post("/v1/pose", data={"boxes": "[[2, 3, 20, 40, 0.8]]"}, files=upload(jpeg()))
        inst = given.json()["result"]["instances"]
        assert given.json()["result"]["box_source"] == "given" and inst[0]["bbox_score"] == pytest.approx(0.8)
        raw = c.post("/v1/pose", params={"file": "_pose.npz", "format": "openpose25"}, files=upload(jpeg(), "me.jpg"))
        assert raw.status_code == 200 and raw.headers["content-type"] == "application/x-npz"
        assert raw.headers["content-disposition"] == 'attachment; filename="me_pose.npz"'
        with np.load(io.BytesIO(raw.content)) as z:
            assert z["keypoints"].shape == (1, 25, 2) and z["boxes"].shape == (1, 5)
        pic = c.post("/v1/seg", params={"file": "vis"}, files=upload(jpeg()))
        assert pic.headers["content-type"] == "image/jpeg"
        assert cv2.imdecode(np.frombuffer(pic.content, np.uint8), cv2.IMREAD_COLOR).shape == (48, 72, 3)
        with_vis = c.post("/v1/normal", params={"vis": "true"}, files=upload(jpeg()))
        assert set(with_vis.json()["files"]) == {"_normal.npy", "_normal.jpg"}


# ------------------------------------------------------------------------------------------------ batching


def test_concurrent_clients_get_their_own_results_in_shared_batches(every_task):
    """16 clients at once, each its own photo size: every answer equals the predictor on that photo alone,
    and the forward passes were shared (mean batch size > 1)."""
    state = every_task.state
    before = {t: state.metrics.batch_sizes(t)[0] for t in ("pose", "normal")}
    jobs = [("normal" if i % 2 else "pose", 30 + 4 * i, 24 + 2 * i, i) for i in range(16)]

    def ask(job):
        task, h, w, seed = job
        with httpx.Client(base_url=every_task.url, timeout=60) as c:
            return c.post(f"/v1/{task}", params={"save": "npz"}, files=upload(png(h, w, seed), f"{seed}.png"))

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, jobs))
    for (task, h, w, seed), r in zip(jobs, answers):
        assert r.status_code == 200, r.text
        direct = state.served[task].predictor(photo(h, w, seed))
        if task == "pose":
            got = r.json()["result"]["instances"][0]
            np.testing.assert_allclose(got["keypoints"], direct.keypoints()[0, :, :2], atol=1e-3)
            assert got["bbox"] == [0.0, 0.0, w - 1.0, h - 1.0]
        else:
            got = np.load(io.BytesIO(decoded(r.json()["files"]["_normal.npy"])))
            assert got.shape == (h, w, 3)
            np.testing.assert_allclose(got, direct.normals, atol=1e-4)
    for task in ("pose", "normal"):
        passes, mean = state.metrics.batch_sizes(task)
        assert passes > before[task] and mean > 1, (task, passes, mean)
    text = httpx.get(f"{every_task.url}/metrics").text
    bucket_1 = float(text.split('sapiens2_batch_size_bucket{task="normal",le="1"} ')[1].split()[0])
    count = float(text.split('sapiens2_batch_size_count{task="normal"} ')[1].split()[0])
    assert bucket_1 < count  # some forward passes held more than one request


def test_batching_off_runs_one_request_per_forward_pass():
    net = Gate(_tiny("seg"))
    net.opened.set()
    from sapiens2.tasks import Segmenter

    with serve([Served("seg", "tiny", Segmenter(net, input_size=INPUT))], max_batch=1, max_wait_ms=50) as s:
        def ask(i):
            return httpx.post(f"{s.url}/v1/seg", files=upload(jpeg(seed=i)), timeout=60).status_code

        with ThreadPoolExecutor(6) as pool:
            assert list(pool.map(ask, range(6))) == [200] * 6
    assert net.batches == [1] * 6


# ------------------------------------------------------------------------------------------------ limits


def test_upload_and_pixel_limits_413(every_task):
    with httpx.Client(base_url=every_task.url, timeout=60) as c:
        big = b"\xff\xd8" + os.urandom(3 << 20)
        msg = error_of(c.post("/v1/seg", files=upload(big)), 413, "upload_too_large")
        assert str(2 << 20) in msg and "--max-upload-mb" in msg

        def chunks():  # no Content-Length: the limit is counted as the body arrives
            yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
            for _ in range(48):
                yield b"x" * (64 << 10)
            yield b"\r\n--b--\r\n"

        r = c.post("/v1/seg", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
        assert "chunked" in r.request.headers.get("transfer-encoding", "")
        error_of(r, 413, "upload_too_large")
        msg = error_of(c.post("/v1/seg", files=upload(png(1100, 1000))), 413, "image_too_large")
        assert "--max-pixels" in msg and "1100000" in msg.replace(",", "")
        assert c.get("/healthz").status_code == 200


def test_bad_requests_422_404_415(every_task):
    with httpx.Client(base_url=every_task.url, timeout=60) as c:
        ok = upload(jpeg())
        assert "not an image" in error_of(c.post("/v1/seg", files=upload(b"hello world" * 10)), 422, "not_an_image")
        error_of(c.post("/v1/seg", files=upload(jpeg()[:300])), 422, "truncated_image")
        error_of(c.post("/v1/seg", files=upload(b"")), 422)
        error_of(c.post("/v1/seg", data={"other": "1"}), 422, "no_image")
        assert "kpt_thr" in error_of(c.post("/v1/pose", params={"kpt_thr": 2}, files=ok), 422, "invalid_request")
        assert "unknown kind" in error_of(c.post("/v1/seg", params={"save": "mp3"}, files=ok), 422, "bad_option")
        assert "nothing for seg" in error_of(c.post("/v1/seg", params={"save": "ply"}, files=ok), 422)
        assert "keypoint format" in error_of(c.post("/v1/pose", params={"format": "coco99"}, files=ok), 422)
        assert "for pose" in error_of(c.post("/v1/seg", params={"format": "coco17"}, files=ok), 422)
        assert "_seg.png" in error_of(c.post("/v1/seg", params={"file": "_x.bin"}, files=ok), 422)
        error_of(c.post("/v1/pose", data={"boxes": "[[1, 2"}, files=ok), 422, "bad_boxes")
        assert "x2 > x1" in error_of(c.post("/v1/pose", data={"boxes": "[[9, 9, 1, 1]]"}, files=ok), 422)
        assert "--allow-urls" in error_of(c.post("/v1/seg", data={"url": "http://127.0.0.1:9/a.jpg"}), 422,
                                          "urls_disabled")
        assert "choose from" in error_of(c.post("/v1/tennis", files=ok), 404, "unknown_task")
        error_of(c.get("/v1/nothing/here"), 404)
        error_of(c.get("/v1/seg"), 405)
        assert "multipart/form-data" in error_of(
            c.post("/v1/seg", content=b'{"image": 1}', headers={"content-type": "application/json"}), 415)
        assert c.post("/v1/segmentation", files=ok).status_code == 200  # the task table's aliases


def test_queue_full_503_and_timeout_504_and_cancelled_requests_skip_the_network():
    from sapiens2.tasks import Segmenter

    net = Gate(_tiny("seg"))
    served = [Served("seg", "tiny", Segmenter(net, input_size=INPUT))]
    with serve(served, max_batch=1, limits=Limits(timeout_s=1.5, max_queue=1)) as s, \
            httpx.Client(base_url=s.url, timeout=60) as c, ThreadPoolExecutor(2) as pool:
        first = pool.submit(c.post, "/v1/seg", files=upload(jpeg()))
        assert net.entered.wait(20)  # the first request is in the (closed) forward pass
        second = pool.submit(c.post, "/v1/seg", files=upload(jpeg(seed=1)))
        deadline = time.monotonic() + 20
        while s.state.batchers["seg"].depth < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert 'sapiens2_queue_depth{task="seg"} 1' in c.get("/metrics").text
        r = c.post("/v1/seg", files=upload(jpeg(seed=2)))
        assert "--max-queue" in error_of(r, 503, "queue_full") and r.headers["retry-after"] == "1"
        for f in (first, second):
            assert "--timeout" in error_of(f.result(), 504, "timeout")
        net.opened.set()
        assert c.post("/v1/seg", files=upload(jpeg())).status_code == 200
    assert net.batches == [1, 1]  # the first request's pass and the last; the timed-out waiting one was dropped
    text = s.state.metrics.render()
    assert 'status="503"} 1' in text and 'status="504"} 2' in text


def test_weights_missing_says_which_and_how(tmp_path):
    served = load_served(["seg", "pose"], {"seg": None, "pose": None}, detector="rtmdet")
    assert not any(s.ready for s in served)
    with serve(served) as s, httpx.Client(base_url=s.url) as c:
        msg = error_of(c.post("/v1/seg", files=upload(jpeg())), 503, "weights_missing")
        assert "sapiens2-seg-0.4b" in msg and "sapiens2 download sapiens2-seg-0.4b" in msg
        models = {m["task"]: m for m in c.get("/v1/models").json()["tasks"]}
        assert not models["pose"]["ready"]
        assert "sapiens2 download sapiens2-pose-0.4b rtmdet-m-person" in models["pose"]["missing"]
        assert c.get("/healthz").json()["status"] == "degraded"


def test_image_urls_only_when_allowed_and_bounded():
    import http.server

    class Photos(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = {"/a.jpg": jpeg(), "/big.jpg": b"\xff\xd8" + b"0" * 5000}.get(self.path)
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    photos = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Photos)
    threading.Thread(target=photos.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{photos.server_address[1]}"
    served = [Served("seg", "tiny", tiny_predictor("seg"))]
    try:
        with serve(served, allow_urls=True, limits=Limits(max_upload_bytes=4096)) as s, \
                httpx.Client(base_url=s.url, timeout=60) as c:
            r = c.post("/v1/seg", data={"url": f"{base}/a.jpg"})
            assert r.status_code == 200 and r.json()["image_size"] == [48, 36]
            assert "over the limit" in error_of(c.post("/v1/seg", data={"url": f"{base}/big.jpg"}), 413)
            error_of(c.post("/v1/seg", data={"url": f"{base}/missing.jpg"}), 422, "url_unreachable")
            error_of(c.post("/v1/seg", data={"url": "file:///etc/passwd"}), 422, "bad_url")
            error_of(c.post("/v1/seg", data={"url": f"{base}/a.jpg"}, files=upload(jpeg())), 422)
    finally:
        photos.shutdown()


# ------------------------------------------------------------------------------------------------ fuzzing


def _raw_request(port: int, payload: bytes) -> bytes:
    """What the server answers to raw bytes; b"reset" when it hung up on a request it would not read."""
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                out += chunk
        except OSError:  # reset, broken pipe, not connected: the server hung up
            return out or b"reset"
    return out


def test_fuzzed_uploads_are_all_answered_4xx_and_the_server_stays_up(every_task):
    rng = np.random.default_rng(7)
    good_jpeg, good_png = jpeg(64, 48), png(64, 48)
    bodies: list[tuple[str, bytes, str]] = []
    for i in range(12):
        bodies.append((f"r{i}.jpg", rng.integers(0, 256, int(rng.integers(1, 4000)), np.uint8).tobytes(),
                       "image/jpeg"))
    damaged: list[tuple[str, bytes, str]] = []  # may still decode (a JPEG with flipped bits often does)
    for data in (good_jpeg, good_png):
        for cut in (8, 30, 100, len(data) // 2):
            bodies.append(("cut.bin", data[:cut], "application/octet-stream"))
        for trial in range(3):
            flipped = bytearray(data)
            for j in rng.integers(0, len(data), 40):
                flipped[j] ^= 0xFF
            damaged.append(("flip.png", bytes(flipped), "image/png"))
    bodies += [("x.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
               ("x.gif", b"GIF89a" + b"\x00" * 10, "image/gif"), ("x.pdf", b"%PDF-1.4\n", "application/pdf"),
               ("\u2603 ../../etc/passwd\n\"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "text/plain")]
    with httpx.Client(base_url=every_task.url, timeout=60) as c:
        for name, data, kind in bodies:
            r = c.post("/v1/seg", files={"image": (name, data, kind)})
            assert 400 <= r.status_code < 500 and "error" in r.json(), (name, r.status_code, r.text[:200])
        for name, data, kind in damaged:
            r = c.post("/v1/seg", files={"image": (name, data, kind)})
            assert r.status_code == 200 or (400 <= r.status_code < 500 and "error" in r.json()), r.text[:200]
        for kind, content in [("text/plain", b"hello"), ("application/json", b"{}"), ("image/jpeg", good_jpeg),
                              ("multipart/form-data", good_jpeg),  # no boundary
                              ("multipart/form-data; boundary=zz", b"--zz\r\nContent-Disposition: form-data; "
                               b"name=\"image\"; filename=\"a\"\r\n\r\n" + good_jpeg[:50])]:  # unterminated
            r = c.post("/v1/seg", content=content, headers={"content-type": kind})
            assert 400 <= r.status_code < 500 and "error" in r.json(), (kind, r.status_code, r.text[:200])
    port = every_task.port
    port = every_task.port
    head = b"POST /v1/seg HTTP/1.1\r\nHost: x\r\n"
    for payload in (head + b"X-Big: " + b"a" * (24 << 10) + b"\r\nContent-Length: 0\r\n\r\n",
                    head + b"".join(b"X-%d: y\r\n" % i for i in range(2000)) + b"Content-Length: 0\r\n\r\n",
                    head + b"Content-Length: 99999999999999999999\r\n\r\n",
                    head + b"Content-Length: -5\r\n\r\n",
                    b"NOT HTTP AT ALL\r\n\r\n"):
        answer = _raw_request(port, payload)
        assert answer.startswith(b"HTTP/1.1 4"), (payload[:60], answer[:120])
    # a megabyte of header: over the HTTP parser's buffer; refused (400) or hung up on, never served
    answer = _raw_request(port, head + b"X-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
    assert answer == b"reset" or answer.startswith(b"HTTP/1.1 4"), answer[:120]
    with httpx.Client(base_url=every_task.url, timeout=60) as c:
        assert c.get("/healthz").status_code == 200
        assert c.post("/v1/seg", files=upload(good_jpeg)).status_code == 200
        assert 'status="5' not in c.get("/metrics").text


# ------------------------------------------------------------------------------------------------ shutdown


def test_graceful_shutdown_finishes_requests_in_flight():
    from sapiens2.tasks import Segmenter

    net = Gate(_tiny("seg"))
    s = serve([Served("seg", "tiny", Segmenter(net, input_size=INPUT))]).__enter__()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, f"{s.url}/v1/seg", files=upload(jpeg()), timeout=60)
        assert net.entered.wait(20)
        s.server.should_exit = True  # what SIGINT / SIGTERM do
        time.sleep(0.3)
        assert s.thread.is_alive()  # still waiting for the request in flight
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{s.url}/healthz", timeout=5)  # no new connections
        net.opened.set()
        r = pending.result(30)
    s.thread.join(30)
    assert r.status_code == 200 and "_seg.npy" in r.json()["files"]
    assert not s.thread.is_alive() and s.state.shutting_down


# ------------------------------------------------------------------------------------------------ CLI


def test_parser_imports_nothing_heavy():
    code = ("import sys; import sapiens2.serve.cli as c; import argparse; p = argparse.ArgumentParser(); "
            "c.add_serve_parser(p.add_subparsers()); "
            "print(sorted(m for m in ('torch', 'fastapi', 'uvicorn', 'starlette') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"


def test_cli_serves_until_sigterm(tmp_path):
    from safetensors.torch import save_file

    ckpt = tmp_path / "tiny_seg.safetensors"
    save_file({k: v.contiguous() for k, v in _tiny("seg").state_dict().items()}, ckpt)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SAPIENS_CHECKPOINT_ROOT": str(tmp_path / "none"),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sapiens2.cli", "serve", "--tasks", "seg,normal", "--model",
                             f"seg={ckpt}", "--input-size", "128x96", "--device", "cpu", "--port", str(port)],
                            cwd=Path(__file__).resolve().parents[2], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else ""
                time.sleep(0.2)
        assert health == {"status": "degraded", "tasks": {"seg": "ready", "normal": "missing weights"}}
        r = httpx.post(f"http://127.0.0.1:{port}/v1/seg", files=upload(jpeg()), timeout=60)
        assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once shut down
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stdout.read()
    assert "normal is not served" in log and "sapiens2 download sapiens2-normal-0.4b" in log
    assert "Application shutdown complete" in log


def test_cli_usage_errors_exit_2(capsys):
    from sapiens2.cli import main

    assert main(["serve", "--tasks", "tennis"]) == 2
    assert "unknown task 'tennis'" in capsys.readouterr().err
    assert main(["serve", "--tasks", "seg,pose", "--model", "foo.safetensors"]) == 2
    assert "TASK=MODEL" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--max-batch", "0"])


def test_cli_batches_by_default_only_on_an_accelerator():
    from sapiens2.cli import build_parser
    from sapiens2.serve.cli import GPU_BATCH, build_app

    parser = build_parser()
    app = build_app(parser.parse_args(["serve", "--tasks", "seg", "--device", "cpu"]))  # weights missing: fast
    assert app.state.sapiens2.batching["max_batch"] == 1 and not app.state.sapiens2.served["seg"].ready
    app = build_app(parser.parse_args(["serve", "--tasks", "seg", "--device", "cpu", "--max-batch", "4",
                                       "--max-upload-mb", "0.5", "--timeout", "7"]))
    state = app.state.sapiens2
    assert state.batching["max_batch"] == 4 and state.limits.max_upload_bytes == 1 << 19
    assert state.limits.timeout_s == 7 and GPU_BATCH > 1
