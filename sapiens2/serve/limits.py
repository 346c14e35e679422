"""What one request may cost, and the errors that say which limit it hit.

Every refusal is a `ServeError`: an HTTP status, a short machine-readable code and a sentence naming the limit
and the option that sets it. The app turns each into `{"error": {"status", "code", "message"}}`.
Upload bytes are bounded twice: by the Content-Length a client announces, and by counting what actually
arrives (`BodyLimit`), so a chunked upload cannot slip past the limit.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BodyLimit", "Limits", "ServeError", "error_body"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MIB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Bounds on a request. A server holds about `max_queue` decoded photos per model, each at most
    `max_pixels` (3 bytes a pixel), plus what the thread pool is working on."""

    max_upload_bytes: int = 20 * MIB  # --max-upload-mb
    max_pixels: int = 1 << 25  # --max-pixels: 33.5 MP, ~100 MB decoded; the CLI's own default is 2^27
    timeout_s: float = 60.0  # --timeout: from upload received to response ready
    max_queue: int = 32  # --max-queue: photos waiting for one model's network

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_pixels", "max_queue"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")


class ServeError(Exception):
    """A refused request: `status` (4xx/5xx), `code` (e.g. `upload_too_large`) and a message for people."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    """The JSON of every error the server answers."""
    return {"error": {"status": status, "code": code, "message": message}}


def upload_too_large(limit: int, got: int | None = None) -> ServeError:
    what = f"{got} bytes" if got is not None else "more bytes"
    return ServeError(413, "upload_too_large", f"the upload is {what}, over the limit of {limit} bytes "
                      f"({limit / MIB:g} MiB; the server's --max-upload-mb)")


class BodyLimit:
    """ASGI middleware: refuse (413) a request body over `max_bytes`, announced or not.

    A body announced too large is refused before a byte of it is read. One that grows past the limit while
    arriving stops being read; whatever response the app then starts is replaced by the 413 (the framework
    reports an aborted body as a parse error, which would hide the real reason).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, int(max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        announced = _content_length(scope)
        if announced is not None and announced > self.max_bytes:
            await _send_error(send, upload_too_large(self.max_bytes, announced))
            return
        state = {"seen": 0, "over": False, "started": False, "replaced": False}

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > self.max_bytes:
                    state["over"] = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            if state["over"]:
                if not state["replaced"] and message["type"] == "http.response.start":
                    state["replaced"] = True
                    await _send_error(send, upload_too_large(self.max_bytes))
                return
            state["started"] = state["started"] or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _BodyTooLarge:
            if not state["started"] and not state["replaced"]:
                await _send_error(send, upload_too_large(self.max_bytes))


class _BodyTooLarge(Exception):
    pass


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_error(send: Send, error: ServeError) -> None:
    body = json.dumps(error_body(error.status, error.code, error.message)).encode()
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
