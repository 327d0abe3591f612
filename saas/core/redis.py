"""One Redis client per process for our own keys (circuit breakers, quotas, heartbeats)."""

import asyncio
import weakref
from functools import cache
from typing import Any

import redis
import redis.asyncio
from django.conf import settings

from saas.core import on_loop


def delete_matching(pattern: str, *, limit: int) -> int:
    """Deletes up to `limit` keys matching a glob pattern (SCAN, never KEYS): an erasure calls it until 0."""
    client = get_redis()
    keys = [key for _, key in zip(range(limit), client.scan_iter(match=pattern, count=1000), strict=False)]
    return int(client.delete(*keys)) if keys else 0


def _pool_options() -> dict[str, object]:
    """One set of pool settings for the blocking and the asyncio clients."""
    return {
        "max_connections": settings.REDIS_POOL_MAX,
        "timeout": settings.REDIS_POOL_TIMEOUT,
        "socket_connect_timeout": 2,
        "socket_timeout": 2,
        "health_check_interval": 30,
        "decode_responses": True,
    }


class _Redis(redis.Redis):
    """The blocking client, except inside saas.core.on_loop.run: there a command (or a pipeline) is awaited on
    the loop's asyncio client, with the same replies."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if on_loop.active():
            return on_loop.await_(get_async_redis().execute_command(*args, **options))
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        if on_loop.active():
            return _LoopPipeline(get_async_redis().pipeline(transaction=transaction, shard_hint=shard_hint))
        return super().pipeline(transaction, shard_hint)


class _LoopPipeline:
    """A pipeline of queued commands (no WATCH), executed by awaiting the asyncio client's."""

    def __init__(self, pipeline: Any) -> None:
        self._pipeline = pipeline

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._pipeline, name)
        if name in ("execute", "reset"):
            return lambda *args, **kwargs: on_loop.await_(attribute(*args, **kwargs))
        if not callable(attribute):
            return attribute

        def queue(*args: Any, **kwargs: Any) -> Any:
            queued = attribute(*args, **kwargs)
            return self if queued is self._pipeline else queued  # chained commands stay on this wrapper

        return queue

    def __enter__(self) -> "_LoopPipeline":
        return self

    def __exit__(self, *exc: Any) -> None:
        on_loop.await_(self._pipeline.reset())


@cache
def get_redis() -> redis.Redis:
    # A blocking pool: with more threads than connections (hundreds of open streams in one process), a thread
    # waits a moment for a free connection instead of failing with "Too many connections".
    pool = redis.BlockingConnectionPool.from_url(settings.REDIS_URL, **_pool_options())
    return _Redis(connection_pool=pool)


_async_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis]" = (
    weakref.WeakKeyDictionary()
)


def get_async_redis() -> "redis.asyncio.Redis":
    """The same Redis for code running on an event loop (the gateway's async path): one client per loop, since
    an asyncio connection belongs to the loop that opened it. Its pool is bounded like the blocking one; a
    coroutine waits for a free connection instead of failing."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=settings.REDIS_POOL_MAX,
            timeout=settings.REDIS_POOL_TIMEOUT,
            socket_connect_timeout=2,
            socket_timeout=2,
            health_check_interval=30,
            decode_responses=True,
        )
        client = _async_clients[loop] = redis.asyncio.Redis(connection_pool=pool)
    return client
