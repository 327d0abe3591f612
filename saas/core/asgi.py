"""Django's ASGI handler, with each HTTP request's middleware and view run in one call to the worker thread.

Under ASGI, Django builds an asynchronous middleware chain. With synchronous middleware and views (all of
ours, and most of Django's own) that chain then hops between the event loop and the request's worker thread
around the view, every `process_view` hook and the response rendering: six hops per API request here, each a
cross-thread handoff. Built the WSGI way instead, the chain is entered once and left once. Streaming
responses and websockets are unaffected; an async view would still work (Django runs it with async_to_sync).
"""

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler


class OneHopASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)
        self._middleware_chain = sync_to_async(self._middleware_chain, thread_sensitive=True)  # type: ignore[has-type]
