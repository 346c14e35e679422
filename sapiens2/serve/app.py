"""The FastAPI app: `POST /v1/{task}`, `GET /v1/models`, `GET /healthz`, `GET /metrics`, and the page at `/`.

A request is read (bounded by `limits.BodyLimit`), decoded and prepared on the thread pool, queued for its
model's `Batcher` (the forward pass, gathered with other requests), finished and written on the thread pool,
all under the request timeout. The event loop only waits. Every refusal is JSON:
`{"error": {"status", "code", "message"}}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from sapiens2.serve import pipeline
from sapiens2.serve.batching import Batcher, QueueFull
from sapiens2.serve.limits import BodyLimit, Limits, ServeError, error_body
from sapiens2.serve.metrics import Metrics
from sapiens2.serve.models import Served

__all__ = ["ServerState", "create_app"]

STATIC = Path(__file__).resolve().parent / "static"
_STATUS_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "upload_too_large",
                 415: "unsupported_media_type", 422: "invalid_request", 500: "internal_error",
                 503: "unavailable", 504: "timeout"}


class ServerState:
    """What the routes share: the served tasks, one batcher per ready model, the thread pool and the metrics."""

    def __init__(self, served: list[Served], limits: Limits, max_batch: int, max_wait_ms: float, workers: int,
                 allow_urls: bool) -> None:
        if int(workers) < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.served = {s.task: s for s in served}
        self.limits, self.allow_urls = limits, allow_urls
        self.metrics = Metrics()
        self.executor = ThreadPoolExecutor(int(workers), thread_name_prefix="sapiens2-serve")
        self.batchers: dict[str, Batcher] = {}
        for s in served:
            if s.ready:
                self.batchers[s.task] = Batcher(
                    s.task, s.predictor.run, max_batch=max_batch, max_wait_s=max_wait_ms / 1000.0,
                    max_queue=limits.max_queue, on_batch=lambda n, t=s.task: self.metrics.batch(t, n))
        self.batching = {"max_batch": int(max_batch), "max_wait_ms": float(max_wait_ms)}
        self.in_flight = 0
        self.shutting_down = False
        self._lock = threading.Lock()
        self.metrics.gauge("sapiens2_queue_depth", "Requests waiting for a model's forward pass.",
                           lambda: {t: b.depth for t, b in self.batchers.items()})
        self.metrics.gauge("sapiens2_in_flight", "Prediction requests being handled.",
                           lambda: {"": self.in_flight})

    def count_in_flight(self, change: int) -> None:
        with self._lock:
            self.in_flight += change

    async def in_pool(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def close(self) -> None:
        """Finish what is queued, then stop the batchers and the pool (graceful shutdown's last step)."""
        self.shutting_down = True
        for b in self.batchers.values():
            b.close()
        self.executor.shutdown(wait=True)


def create_app(served: list[Served], *, limits: Limits | None = None, max_batch: int = 8,
               max_wait_ms: float = 10.0, workers: int = 4, allow_urls: bool = False) -> FastAPI:
    """The server's app for these tasks. `max_batch=1` turns dynamic batching off."""
    limits = limits or Limits()
    state = ServerState(served, limits, max_batch, max_wait_ms, workers, allow_urls)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await asyncio.get_running_loop().run_in_executor(None, state.close)

    import sapiens2

    app = FastAPI(title="sapiens2", version=sapiens2.__version__, lifespan=lifespan,
                  description="Sapiens2 human-centric vision models over HTTP: pose, segmentation, normals, "
                              "pointmaps, albedo, matting. Results use the same schema as the CLI's files.")
    app.state.sapiens2 = state
    _error_handlers(app)
    _routes(app, state)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(_CountRequests, metrics=state.metrics)
    app.add_middleware(BodyLimit, max_bytes=limits.max_upload_bytes)
    return app


# ------------------------------------------------------------------------------------------------ errors


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServeError)
    async def serve_error(request: Request, e: ServeError) -> JSONResponse:
        return JSONResponse(error_body(e.status, e.code, e.message), e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        parts = []
        for err in e.errors():
            where = [str(x) for x in err.get("loc", ())]
            place = f"{where[0]} parameter {'.'.join(where[1:])!r}" if len(where) > 1 else ".".join(where)
            parts.append(f"{place}: {err.get('msg', 'invalid')}")
        return JSONResponse(error_body(422, "invalid_request", "; ".join(parts) or "invalid request"), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(e.status_code, "error")
        detail = e.detail if isinstance(e.detail, str) else str(e.detail)
        if e.status_code == 400 and "parsing the body" in detail:
            detail = "the multipart body could not be parsed (malformed or truncated form data)"
        return JSONResponse(error_body(e.status_code, code, detail), e.status_code, headers=e.headers)

    @app.exception_handler(Exception)
    async def crash(request: Request, e: Exception) -> JSONResponse:
        return JSONResponse(error_body(500, "internal_error", f"{type(e).__name__}: {e}"), 500)


class _CountRequests:
    """ASGI middleware: every answered prediction request in `sapiens2_requests_total` and the latency
    histogram, whatever answered it (the route, a validation error, the body limit)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith("/v1/") or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        task = path.removeprefix("/v1/").strip("/") or "-"
        from sapiens2.task_table import TASKS

        task = task if task in TASKS else "unknown"
        start, status = time.perf_counter(), [500]

        async def seen(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, seen)
        finally:
            self.metrics.request(task, status[0], time.perf_counter() - start)


# ------------------------------------------------------------------------------------------------ routes

_SAVE_HELP = ("what to return, as the CLI's --save: comma-separated json,npz,png,ply,vis (default: the task's "
              "defaults without the picture)")


def _routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/demo.jpg", include_in_schema=False)
    async def demo() -> FileResponse:
        from sapiens2.runner.cli import demo_photo

        return FileResponse(demo_photo(), media_type="image/jpeg")

    @app.get("/healthz", summary="Liveness: 200 while serving, 503 while shutting down")
    async def healthz() -> JSONResponse:
        tasks = {t: "ready" if s.ready else "missing weights" for t, s in state.served.items()}
        if state.shutting_down:
            return JSONResponse({"status": "shutting down", "tasks": tasks}, 503)
        ok = all(s.ready for s in state.served.values())
        return JSONResponse({"status": "ok" if ok else "degraded", "tasks": tasks})

    @app.get("/v1/models", summary="The tasks this server offers, their models, and what is missing")
    async def models() -> dict[str, Any]:
        from sapiens2.keypoints.convert import FORMATS

        return {"tasks": [s.describe() for s in state.served.values()], "batching": state.batching,
                "keypoint_formats": list(FORMATS),
                "limits": {"max_upload_bytes": state.limits.max_upload_bytes,
                           "max_pixels": state.limits.max_pixels, "timeout_s": state.limits.timeout_s,
                           "max_queue": state.limits.max_queue},
                "image_urls": state.allow_urls}

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/{task}", summary="Run a task on one photo",
              responses={200: {"description": "JSON results (or one file's bytes with `file=`)"},
                         413: {"description": "upload or image too large"}, 415: {"description": "not a form"},
                         422: {"description": "not an image, or a bad option"},
                         503: {"description": "queue full, weights missing, or shutting down"},
                         504: {"description": "timed out"}})
    async def predict(
        request: Request,
        task: str,
        image: Annotated[UploadFile | None, File(description="the photo (JPEG, PNG, WebP, ...)")] = None,
        url: Annotated[str | None, Form(description="an image URL instead of an upload (if the server allows)")] = None,
        boxes: Annotated[str | None, Form(description="pose: JSON [[x1, y1, x2, y2(, score)], ...], "
                                                      "skipping the detector")] = None,
        save: Annotated[str | None, Query(description=_SAVE_HELP)] = None,
        vis: Annotated[bool, Query(description="also return the picture (the CLI's _<task>.jpg)")] = False,
        format: Annotated[str | None, Query(description="pose: keypoint format (coco17, coco_wholebody133, "
                                                        "openpose_body25, openpose_body18)")] = None,
        kpt_thr: Annotated[float, Query(ge=0.0, le=1.0, description="pose: drawing threshold")] = 0.3,
        radius: Annotated[int, Query(ge=0, le=100, description="pose: keypoint radius in the picture")] = 3,
        thickness: Annotated[int, Query(ge=1, le=100, description="pose: line thickness in the picture")] = 1,
        file: Annotated[str | None, Query(description="answer with this one file's bytes (a suffix such as "
                                                      "_seg.png, or 'vis' for the picture)")] = None,
    ) -> Response:
        served = _served(state, task)
        task = served.task
        options = pipeline.parse_options(task, save=save, vis=vis, keypoint_format=format, kpt_thr=kpt_thr,
                                         radius=radius, thickness=thickness, file=file)
        given = pipeline.parse_boxes(boxes)
        if given is not None and task != "pose":
            raise ServeError(422, "bad_option", f"boxes are for pose, not {task}")
        data, name = await _upload(request, state, image, url)
        if state.shutting_down:
            raise ServeError(503, "shutting_down", "the server is shutting down; retry on another instance")
        state.count_in_flight(+1)
        try:
            body = await asyncio.wait_for(_predict(state, served, data, name, given, options),
                                          state.limits.timeout_s)
        except (asyncio.TimeoutError, TimeoutError):
            raise ServeError(504, "timeout", f"the {task} request took longer than {state.limits.timeout_s:g} s "
                             "(the server's --timeout)") from None
        finally:
            state.count_in_flight(-1)
        if isinstance(body, Response):
            return body
        return JSONResponse(body)


def _served(state: ServerState, task: str) -> Served:
    from sapiens2.task_table import task_name

    try:
        name = task_name(task)
    except ValueError as e:
        raise ServeError(404, "unknown_task", str(e)) from None
    served = state.served.get(name)
    if served is None:
        raise ServeError(404, "task_not_served", f"this server does not run {name}; it runs "
                         f"{', '.join(state.served)} (start it with --tasks {name} to add it)")
    if not served.ready:
        raise ServeError(503, "weights_missing", served.missing or f"the {name} model is not loaded")
    return served


async def _upload(request: Request, state: ServerState, image: UploadFile | None,
                  url: str | None) -> tuple[bytes, str]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise ServeError(415, "unsupported_media_type", f"send the photo as multipart/form-data with a file field "
                         f"'image' (got content-type {kind or 'none'!r})")
    limit = state.limits.max_upload_bytes
    if image is not None and url:
        raise ServeError(422, "bad_request", "send either an 'image' file or a 'url', not both")
    if image is not None:
        data = await image.read(limit + 1)
        if len(data) > limit:
            raise ServeError(413, "upload_too_large", f"the image is over the limit of {limit} bytes "
                             "(the server's --max-upload-mb)")
        return data, image.filename or "upload"
    if url:
        if not state.allow_urls:
            raise ServeError(422, "urls_disabled", "image URLs are off on this server (start it with --allow-urls); "
                             "upload the file as 'image' instead")
        return await state.in_pool(_fetch, url, limit, state.limits.timeout_s), url
    raise ServeError(422, "no_image", "no image: send multipart/form-data with a file field 'image'")


def _fetch(url: str, limit: int, timeout: float) -> bytes:
    """An image URL's bytes (http/https only), bounded like an upload."""
    if not url.lower().startswith(("http://", "https://")):
        raise ServeError(422, "bad_url", f"url {url!r}: only http:// and https:// URLs are fetched")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - scheme checked above
            data = r.read(limit + 1)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ServeError(422, "url_unreachable", f"could not fetch {url}: {e}") from None
    if len(data) > limit:
        raise ServeError(413, "upload_too_large", f"{url} is over the limit of {limit} bytes "
                         "(the server's --max-upload-mb)")
    return data


async def _predict(state: ServerState, served: Served, data: bytes, name: str, boxes: Any,
                   options: pipeline.Options) -> dict[str, Any] | Response:
    """decode + prepare (pool) -> the batched forward pass -> finish + files (pool)."""
    predictor, task = served.predictor, served.task
    t0 = time.perf_counter()
    image = await state.in_pool(pipeline.decode, data, name, state.limits.max_pixels)
    try:
        if task == "pose":
            prepared = await state.in_pool(predictor.prepare, image, boxes)
        else:
            prepared = await state.in_pool(predictor.prepare, image)
    except ValueError as e:
        raise ServeError(422, "bad_request", str(e)) from None
    t1 = time.perf_counter()
    try:
        future = state.batchers[task].submit(prepared)
    except QueueFull as e:
        raise ServeError(503, "queue_full", str(e), headers={"Retry-After": "1"}) from None
    except RuntimeError as e:
        raise ServeError(503, "shutting_down", str(e)) from None
    try:
        raw = await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        future.cancel()
        raise
    except Exception as e:
        raise ServeError(500, "prediction_failed", f"the {task} network failed: {type(e).__name__}: {e}") from None
    t2 = time.perf_counter()
    result = pipeline.with_name(await state.in_pool(predictor.finish, raw, prepared), name)
    if options.file:
        files = await state.in_pool(pipeline.write_files, result, image, options)
        suffix, content = next(iter(files.items()))
        stem = re.sub(r"[^A-Za-z0-9_-]", "_", Path(name).name.split(".", 1)[0])[:100] or "upload"
        return Response(content, media_type=pipeline.media_type(suffix),
                        headers={"Content-Disposition": f'attachment; filename="{stem}{suffix}"'})
    record = None
    if task == "pose":
        record = result.record(options.writer_options["keypoint_format"], options.writer_options["kpt_thr"])
        options = pipeline.Options(options.kinds - {"json"}, options.writer_options)
    files = await state.in_pool(pipeline.write_files, result, image, options)
    t3 = time.perf_counter()
    return {"task": task, "model": served.model, "image_size": list(image.shape[:2]), "result": record,
            "files": pipeline.respond_files(files),
            "timing_ms": {"decode_prepare": round(1000 * (t1 - t0), 2), "queue_network": round(1000 * (t2 - t1), 2),
                          "finish_write": round(1000 * (t3 - t2), 2)}}
