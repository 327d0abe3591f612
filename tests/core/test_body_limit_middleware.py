"""The ASGI guard for servers other than daphne (uvicorn, hypercorn hand the body over as it arrives), and the
WSGI middleware: the same limits, the same answers. The live tests against daphne are in test_http_limits.py."""

import asyncio
import json
from typing import Any

import pytest

from saas.core.http_limits import BodyLimitMiddleware, body_limit


def _run(path: str, messages: list[dict[str, Any]], headers: list[tuple[bytes, bytes]], *, stall: bool = False):
    """Serve one request through the middleware around an app that reads the whole body and answers 200."""
    sent: list[dict[str, Any]] = []
    seen: list[bytes] = []
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        if stall:
            await asyncio.sleep(3600)  # the client declared more and sends nothing
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def app(scope, receive, send) -> None:
        while True:
            message = await receive()
            seen.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    asyncio.run(BodyLimitMiddleware(app)(scope, receive, send))
    status = sent[0]["status"]
    body = json.loads(sent[1]["body"]) if status != 200 else None
    return status, body, b"".join(seen)


@pytest.mark.django_db
def test_a_declared_length_over_the_limit_never_reaches_the_app():
    status, body, seen = _run("/api/v1/ask", [], [(b"content-length", b"209715200")])
    assert status == 413 and body["error"]["code"] == "too_large"
    assert body["error"]["details"] == {"limit": 1024 * 1024} and body["error"]["request_id"]
    assert seen == b""


@pytest.mark.django_db
def test_a_body_without_a_length_is_cut_off_at_the_limit():
    chunk = {"type": "http.request", "body": b"x" * 400_000, "more_body": True}
    status, body, seen = _run("/api/v1/ask", [chunk, chunk, chunk, chunk], [])
    assert status == 413 and body["error"]["code"] == "too_large"
    assert len(seen) <= 1024 * 1024


@pytest.mark.django_db
def test_a_body_that_stops_arriving_times_out(settings):
    settings.HTTP_REQUEST_TIMEOUT = 0.2
    first = {"type": "http.request", "body": b"{", "more_body": True}
    status, body, _ = _run("/api/v1/ask", [first], [(b"content-length", b"1000")], stall=True)
    assert status == 408 and body["error"]["code"] == "request_timeout"


@pytest.mark.django_db
def test_bodies_under_the_limit_pass_untouched():
    parts = [
        {"type": "http.request", "body": b'{"name": ', "more_body": True},
        {"type": "http.request", "body": b'"x"}', "more_body": False},
    ]
    status, _, seen = _run("/api/v1/collections", parts, [(b"content-length", b"13")])
    assert status == 200 and seen == b'{"name": "x"}'


@pytest.mark.django_db
def test_a_malformed_length_is_a_400():
    status, body, _ = _run("/api/v1/ask", [], [(b"content-length", b"12x")])
    assert status == 400 and body["error"]["code"] == "malformed_request"


def test_each_route_has_its_limit(settings):
    settings.API_MAX_BODY_BYTES, settings.DOCUMENTS_MAX_BYTES, settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10, 1000, 100
    assert body_limit("POST", "/api/v1/documents") == 1000 + 64 * 1024  # the upload, with its envelope
    assert body_limit("PATCH", "/api/v1/documents/abc") == 10
    assert body_limit("POST", "/v1/chat/completions") == 10
    assert body_limit("POST", "/stripe/webhook/") == 10
    assert body_limit("POST", "/accounts/login/") == 100


@pytest.mark.django_db
def test_under_wsgi_a_declared_length_over_the_route_limit_is_refused(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    response = client.post("/accounts/login/", data="x" * 500, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 413 and response.json()["error"]["details"] == {"limit": 100}
