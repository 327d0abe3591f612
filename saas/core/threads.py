"""The thread pools where websocket consumers run their blocking steps, never asyncio's default one.

The gateway, retrieval and the ORM are synchronous, so a consumer runs each blocking step in a worker thread
while its event loop keeps serving every other socket. asyncio's default pool has min(32, cores + 4) threads
(six on two cores): at 100 concurrent chats, answers queued behind each other for that handful of threads and
the first token took seconds. Channels' `database_sync_to_async` is no better here: outside an HTTP request it
runs every call of the process on one single thread. Instead, two pools of our own:

- `stream`: the steps of an answer being streamed (each waits on the model for its next tokens), at most
  LLM_STREAM_THREADS at once per process. Past that, answers wait for a thread (their first token comes later);
  none fails.
- `websocket_db`: the short database steps of a socket (the access check before every frame, starting a turn,
  reading a run), at most WEBSOCKET_DB_THREADS at once: more would only wait on the connection pool.

Both are created on first use; each step runs with the caller's context (the request id) and its database
connections are closed (given back to the pool) when it ends. /metrics shows the threads of each pool
(`crewdesk_threads{pool=...}`).
"""

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

T = TypeVar("T")

STREAM = "stream"
WEBSOCKET_DB = "websocket_db"
# Thread name prefixes: ours, and those of the pools we keep clear of (to see it in /metrics).
_PREFIXES = {STREAM: "crewdesk-stream", WEBSOCKET_DB: "crewdesk-ws-db", "asyncio_default": "asyncio_"}
_SIZES = {STREAM: "LLM_STREAM_THREADS", WEBSOCKET_DB: "WEBSOCKET_DB_THREADS"}

_lock = threading.Lock()
_executors: dict[str, ThreadPoolExecutor] = {}


def executor(pool: str) -> ThreadPoolExecutor:
    """The process's pool of that name, created on first use at its configured size."""
    found = _executors.get(pool)
    if found is not None:
        return found
    with _lock:
        if pool not in _executors:
            size = int(getattr(settings, _SIZES[pool]))
            _executors[pool] = ThreadPoolExecutor(max_workers=size, thread_name_prefix=_PREFIXES[pool])
        return _executors[pool]


def _closing(function: Callable[..., T]) -> Callable[..., T]:
    def run(*args: Any) -> T:
        try:
            return function(*args)
        finally:
            close_old_connections()  # CONN_MAX_AGE 0: the connection goes back to the pool

    return run


async def run_in(pool: str, function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` in a thread of that pool, with the caller's context; connections closed after."""
    return await sync_to_async(_closing(function), thread_sensitive=False, executor=executor(pool))(*args)


async def stream_step(function: Callable[..., T], *args: Any) -> T:
    return await run_in(STREAM, function, *args)


async def db_step(function: Callable[..., T], *args: Any) -> T:
    return await run_in(WEBSOCKET_DB, function, *args)


class ThreadsCollector(Collector):
    """crewdesk_threads{pool}: the live threads of each pool at scrape time; crewdesk_threads_max{pool}: its size."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = dict.fromkeys(_PREFIXES, 0)
        for thread in threading.enumerate():
            for pool, prefix in _PREFIXES.items():
                if thread.name.startswith(prefix):
                    counts[pool] += 1
        live = GaugeMetricFamily("crewdesk_threads", "Live threads per pool", labels=["pool"])
        for pool, count in counts.items():
            live.add_metric([pool], count)
        yield live
        size = GaugeMetricFamily("crewdesk_threads_max", "Most threads a pool may run", labels=["pool"])
        for pool, setting in _SIZES.items():
            size.add_metric([pool], int(getattr(settings, setting)))
        yield size


_collector = ThreadsCollector()


def register_metrics() -> None:
    """Once per process (saas.core.apps): the collector in the default registry /metrics exports."""
    with suppress(ValueError):  # registered already (a second setup in the same process)
        REGISTRY.register(_collector)
