"""How large a request body may be and how long a client may take to send it, for every route.

The limits are enforced where the bytes arrive. Under daphne that is saas.core.http_server: Twisted reads a
whole request body before the application sees any of it, so the check must happen there, from the headers.
Under any other ASGI server, BodyLimitMiddleware (wrapped around the application in saas/asgi.py) does the same
from the scope and while the body is received; under WSGI, saas.core.middleware does it from the declared length.
All three answer in the one JSON error shape: 413 `too_large` with the limit, 408 `request_timeout`.
"""

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from functools import cache
from typing import Any

from django.conf import settings
from django.urls import reverse

MULTIPART_ENVELOPE_BYTES = 64 * 1024  # the form fields and boundaries around an uploaded file

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@cache
def _upload_paths() -> frozenset[str]:
    return frozenset({reverse("document-list")})


def body_limit(method: str, path: str) -> int:
    """The largest body, in bytes, a request to this route may carry."""
    if method.upper() == "POST" and path.rstrip("/") in _upload_paths():
        return int(settings.DOCUMENTS_MAX_BYTES) + MULTIPART_ENVELOPE_BYTES
    if path.startswith(("/api/", "/v1/", "/stripe/")):
        return int(settings.API_MAX_BODY_BYTES)
    return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)  # browser forms


def request_timeout() -> float:
    return float(settings.HTTP_REQUEST_TIMEOUT)


def keep_alive_timeout() -> int:
    return int(settings.HTTP_KEEP_ALIVE_TIMEOUT)


def listen_backlog() -> int:
    return int(settings.HTTP_LISTEN_BACKLOG)


def too_large_message(limit: int, length: int | None = None) -> str:
    if length is None:
        return f"The request body is larger than the limit of {limit} bytes for this route."
    return f"The request body is {length} bytes; the limit for this route is {limit}."


def timeout_message() -> str:
    return f"The request was not received in full within {request_timeout():g} seconds."


def error_json(code: str, message: str, details: dict[str, Any] | None = None) -> tuple[bytes, str]:
    """The error shape of saas.core.errors, for answers given before Django (and its request id) is involved."""
    request_id = uuid.uuid4().hex
    body = {"error": {"code": code, "message": message, "details": details or {}, "request_id": request_id}}
    return json.dumps(body).encode(), request_id


_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 413: b"Content Too Large",
            431: b"Request Header Fields Too Large"}  # fmt: skip


def refusal(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> bytes:
    """A whole HTTP/1.1 response refusing a request before the application saw it (the servers' own answer):
    the error shape, its request id, and the connection closing."""
    body, request_id = error_json(code, message, details)
    head = [
        b"HTTP/1.1 %d %s" % (status, _REASONS[status]),
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(body),
        b"X-Request-ID: " + request_id.encode(),
        b"Connection: close",
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


_server_enforces_limits = False


def enforced_by_server() -> None:
    """Said by a server that enforces these limits itself before the application sees a request (our daphne,
    saas.core.http_server): BodyLimitMiddleware then steps aside, as it would find nothing to refuse and its
    timed receive costs a task and a timer per message (0.4 ms of CPU per API call)."""
    global _server_enforces_limits
    _server_enforces_limits = True


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    pass


class BodyLimitMiddleware:
    """The same limits for ASGI servers that hand the body over as it arrives (uvicorn, hypercorn). Under
    daphne the body has been checked by then (saas.core.http_server), which says so (enforced_by_server)."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _server_enforces_limits:
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope["method"], scope["path"])
        declared = _declared_length(scope)
        if declared == -1:
            await _send_error(send, 400, "malformed_request", "Invalid Content-Length header.")
            return
        if declared is not None and declared > limit:
            await _send_error(send, 413, "too_large", too_large_message(limit, declared), {"limit": limit})
            return
        deadline = time.monotonic() + request_timeout()
        received = 0
        body_done = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:
                return await receive()  # after the body: http.disconnect, whenever it comes
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise BodyTimeout from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
                body_done = not message.get("more_body", False)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _send_error(send, 413, "too_large", too_large_message(limit), {"limit": limit})
        except BodyTimeout:
            if not started:
                await _send_error(send, 408, "request_timeout", timeout_message())


def _declared_length(scope: Scope) -> int | None:
    """The Content-Length header as a number; None without one, -1 when it is not a number."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            return int(value) if value.strip().isdigit() else -1
    return None


async def _send_error(send: Send, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
    body, request_id = error_json(code, message, details)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
