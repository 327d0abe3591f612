"""Streaming an iterator to an ASGI client as it is produced.

Under ASGI, Django's StreamingHttpResponse reads a synchronous iterator to its end before it sends the first
byte (it warns about it), which turns a token stream into one late burst. This response pulls one item at a
time in the request's worker thread instead. Under WSGI (and Django's test client) nothing changes.

When the client goes away, Django cancels the sending task and then closes the response, which closes the
iterator (in that same thread, after the item in progress): producers see GeneratorExit and can stop their
upstream work.
"""

from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.http import StreamingHttpResponse

from saas.core.db import release_connections

_END: Any = object()


class LiveStreamingHttpResponse(StreamingHttpResponse):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.is_async:
            # An async iterator (the gateway's async path) is read on the event loop, and closed here when the
            # sending stops, whatever stopped it (the client going away included): its producer records that.
            parts = self._iterator  # type: ignore[attr-defined]  # set by StreamingHttpResponse, absent from its stubs
            try:
                async for part in parts:
                    yield self.make_bytes(part)
            finally:
                if (close := getattr(parts, "aclose", None)) is not None:
                    await close()
            return
        content = self.streaming_content
        assert isinstance(content, Iterator)  # not is_async

        def next_part() -> Any:
            try:
                return next(content, _END)
            finally:
                release_connections()  # the next part may be seconds away (a model's tokens)

        pull = sync_to_async(next_part, thread_sensitive=True)
        while (part := await pull()) is not _END:
            yield part


def sse(payload: Any) -> bytes:
    """One server-sent event carrying JSON (orjson: a stream makes one per token, json.dumps cost ten times as
    much per event)."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_response(chunks: Iterator[bytes] | AsyncIterator[bytes]) -> LiveStreamingHttpResponse:
    response = LiveStreamingHttpResponse(chunks, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # tell proxies not to buffer the stream
    return response
