"""Django's ASGI handler, with each HTTP request's middleware and view run in one call to the worker thread.

Under ASGI, Django builds an asynchronous middleware chain. With synchronous middleware and views (all of
ours, and most of Django's own) that chain then hops between the event loop and the request's worker thread
around the view, every `process_view` hook and the response rendering: six hops per API request here, each a
cross-thread handoff. Built the WSGI way instead, the chain is entered once and left once. Streaming
responses and websockets are unaffected; an async view would still work (Django runs it with async_to_sync).

When the client hangs up while the view is still working, Django drops the response the view will produce
without closing it, and with it the work deferred until after sending (saas.core.responses.after_send,
e.g. the ledger row of an LLM call that was paid for). Here the view is left to finish and its response
is closed anyway.

Django runs each request's synchronous work on a thread of its own, started for the request and stopped after
it (two thread starts per request), and sends request_started in a hop of its own. Here a request borrows a
thread kept from an earlier request (still one request per thread at a time) and gives it back when done, and
request_started is sent at the start of the view's hop.
"""

import asyncio
import contextvars
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core import signals
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest
from django.http.response import HttpResponseBase

logger = logging.getLogger(__name__)
_abandoned: set[asyncio.Task[Any]] = set()  # keeps the tasks of abandoned requests alive until they finish
IDLE_THREADS = 64  # request threads kept for the next requests (more are started when more requests are in)
_idle: list[ThreadPoolExecutor] = []
_abandoning: contextvars.ContextVar[list[bool]] = contextvars.ContextVar("abandoning")


class OneHopASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)
        chain = self._middleware_chain  # type: ignore[has-type]

        def started_then_chain(request: Any) -> Any:
            # request_started in the same hop as the view, instead of a hop of its own (see _started_here).
            signals.request_started.send(sender=type(self), scope=getattr(request, "scope", None))
            return chain(request)

        self._middleware_chain = sync_to_async(started_then_chain, thread_sensitive=True)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        thread = _idle.pop() if _idle else ThreadPoolExecutor(max_workers=1, thread_name_prefix="request")
        abandoned = [False]
        _abandoning.set(abandoned)
        try:
            async with ThreadSensitiveContext(executor=thread):
                await self.handle(scope, receive, send)
        except BaseException:
            thread.shutdown(wait=False)  # cancelled or failed: work of this request may still be running on it
            raise
        if abandoned[0] or len(_idle) >= IDLE_THREADS:
            thread.shutdown(wait=False)  # an abandoned view may still be running on it: not reused
        else:
            _idle.append(thread)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        work = asyncio.ensure_future(super().get_response_async(request))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            if (abandoned := _abandoning.get(None)) is not None:
                abandoned[0] = True
            _abandoned.add(work)
            work.add_done_callback(_close_abandoned)
            raise


_send_started = signals.request_started.asend


async def _started_here(sender: Any, **named: Any) -> Any:
    """Django sends request_started from the event loop, one thread hop before the view's; ours is sent at
    the start of the view's hop (OneHopASGIHandler.load_middleware)."""
    if isinstance(sender, type) and issubclass(sender, OneHopASGIHandler):
        return []
    return await _send_started(sender, **named)


signals.request_started.asend = _started_here  # type: ignore[method-assign]


def _close_abandoned(work: "asyncio.Task[Any]") -> None:
    _abandoned.discard(work)
    if work.cancelled() or work.exception() is not None:
        return
    closing = asyncio.ensure_future(sync_to_async(work.result().close, thread_sensitive=False)())
    _abandoned.add(closing)
    closing.add_done_callback(_abandoned.discard)


def _leave_form_bodies_to_django() -> None:
    """daphne's Twisted request parses every multipart POST body into `request.args`, which daphne never
    reads: a second in-memory copy of each upload, and a malformed body answered with an empty 400 (no JSON,
    no request id) before Django sees it. Django parses the body, with our limits and errors."""
    try:
        from daphne.http_protocol import WebRequest
    except ImportError:  # another ASGI server
        return
    original = WebRequest.__init__
    if getattr(original, "leaves_forms_to_django", False):
        return

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._parsePOSTFormSubmission = False

    __init__.leaves_forms_to_django = True  # type: ignore[attr-defined]
    WebRequest.__init__ = __init__  # type: ignore[method-assign]


_leave_form_bodies_to_django()
