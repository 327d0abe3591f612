"""The Redis cache keeps its connections: under ASGI every request has a fresh context, and with it a fresh
cache backend instance; they must share one client and pool rather than dial Redis for every request."""

import asyncio
import contextvars
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.core.cache import caches


def test_backend_instances_of_different_request_contexts_share_one_client():
    async def one_request() -> object:
        def in_view() -> object:
            cache = caches["default"]
            cache.set("crewdesk-cache-test", "ok", 5)
            assert cache.get("crewdesk-cache-test") == "ok"
            return cache

        return await sync_to_async(in_view)()

    def request_in_fresh_context() -> object:
        # Each request starts from an empty context and its own event loop, as a daphne request task does.
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(contextvars.Context().run, asyncio.run, one_request()).result()

    first = request_in_fresh_context()
    pool = first._cache._get_connection_pool(write=True)
    opened = len(pool._connections)  # the process's earlier work may have opened some already: kept, idle
    assert opened >= 1
    second = request_in_fresh_context()
    assert first is not second  # two contexts, two backend objects, as Django makes them under ASGI
    assert first._cache is second._cache
    assert second._cache._get_connection_pool(write=True) is pool
    assert len(pool._connections) == opened  # the second request dialled nothing: it took a kept connection
