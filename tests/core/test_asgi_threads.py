"""The ASGI handler runs each request's synchronous work in one hop to a thread kept between requests: no
thread is started per request (Django's own handler starts two), request_started is sent in that hop, and a
thread that an abandoned request may still be using is not handed to the next request."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator
from django.core import signals

from saas.core import asgi

pytestmark = pytest.mark.django_db(transaction=True)


def _run(coroutine: Any) -> Any:
    """The coroutine on a loop of its own in a thread of its own (the browser tests' loop may run in this one)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _scope(path: str = "/healthz") -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
    }  # fmt: skip


async def _get(handler: asgi.OneHopASGIHandler) -> int:
    communicator = ApplicationCommunicator(handler, _scope())
    await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await communicator.receive_output(timeout=30)
    while (await communicator.receive_output(timeout=30)).get("more_body"):
        pass
    await communicator.wait(timeout=30)
    return int(start["status"])


def test_requests_reuse_a_kept_thread_and_send_request_started_in_it():
    seen: list[tuple[int, str]] = []

    def started(**kwargs: Any) -> None:
        seen.append((threading.get_ident(), threading.current_thread().name))

    signals.request_started.connect(started, dispatch_uid="test-asgi-threads")
    try:
        handler = asgi.OneHopASGIHandler()

        async def three() -> list[int]:
            return [await _get(handler) for _ in range(3)]

        before = threading.active_count()
        assert _run(three()) == [200, 200, 200]
        assert threading.active_count() <= before + 1  # one kept request thread at most, not one per request
    finally:
        signals.request_started.disconnect(dispatch_uid="test-asgi-threads")
    assert len(seen) == 3  # once per request
    idents = {ident for ident, _ in seen}
    assert len(idents) == 1  # the same kept thread every time
    assert all(name.startswith("request") for _, name in seen)  # the request's thread, not the event loop's
    assert threading.main_thread().ident not in idents


def test_a_thread_an_abandoned_request_may_still_use_is_not_reused(monkeypatch):
    handler = asgi.OneHopASGIHandler()
    asgi._idle.clear()

    async def abandoning(request: Any) -> Any:
        flag = asgi._abandoning.get()
        flag[0] = True  # as get_response_async marks it when the client went away mid-view
        return await original(request)

    original = asgi.ASGIHandler.get_response_async.__get__(handler)
    monkeypatch.setattr(handler, "get_response_async", abandoning)

    assert _run(_get(handler)) == 200
    assert asgi._idle == []  # shut down, not kept

    monkeypatch.undo()
    assert _run(_get(handler)) == 200
    assert len(asgi._idle) == 1  # an ordinary request's thread is kept
