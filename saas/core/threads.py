"""The thread pools where websocket consumers run their blocking steps, never asyncio's default one.

The gateway, retrieval and the ORM are synchronous, so a consumer runs each blocking step in a worker thread
while its event loop keeps serving every other socket. asyncio's default pool has min(32, cores + 4) threads
(six on two cores): at 100 concurrent chats, answers queued behind each other for that handful of threads and
the first token took seconds. Channels' `database_sync_to_async` is no better here: outside an HTTP request it
runs every call of the process on one single thread. Instead, two pools of our own:

- `stream`: answers that are synchronous end to end (an answer grounded in documents, and the ask page's: the
  retrieval runs in the same thread), one thread per answer for as long as it lasts (it waits on the model for
  its tokens), at most LLM_STREAM_THREADS at once per process. Past that, answers wait for a thread (their
  first token comes later); none fails. (A chat answer without documents holds no thread: it streams on the
  event loop through saas/llm/gateway_async, agents/conversations.answer_relay.)
  `stream_to` runs an answer's whole (synchronous) iterator in one such thread and hands its events to the
  event loop in batches: one wake-up of the loop for whatever arrived since the last one, instead of a thread
  hop per token (at a few thousand tokens a second, those hops were what kept the event loop from accepting
  new sockets).
- `websocket_db`: the short database steps of a socket (the access check before every frame, starting a turn,
  reading a run), at most WEBSOCKET_DB_THREADS at once: more would only wait on the connection pool.
- `gateway`: the short synchronous steps of the event loop's own requests (`hop`: the ORM, billing, a response's
  closing) on the gateway's ASGI route and a chat answer's end, LLM_GATEWAY_THREADS per process; none waits on
  a model.

Both are created on first use; each step runs with the caller's context (the request id) and its database
connections are closed (given back to the pool) when it ends. /metrics shows the threads of each pool
(`crewdesk_threads{pool=...}`).
"""

import asyncio
import contextvars
import os
import sys
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from asgiref.sync import SyncToAsync, sync_to_async
from django.conf import settings
from django.db import close_old_connections
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from saas.core.db import release_connections

T = TypeVar("T")

STREAM = "stream"
WEBSOCKET_DB = "websocket_db"
GATEWAY = "gateway"
# Thread name prefixes: ours, and those of the pools we keep clear of (to see it in /metrics).
_PREFIXES = {STREAM: "crewdesk-stream", WEBSOCKET_DB: "crewdesk-ws-db", GATEWAY: "crewdesk-gateway",
             "asyncio_default": "asyncio_"}  # fmt: skip
_SIZES = {STREAM: "LLM_STREAM_THREADS", WEBSOCKET_DB: "WEBSOCKET_DB_THREADS", GATEWAY: "LLM_GATEWAY_THREADS"}

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


def _serve_loop(loop: asyncio.AbstractEventLoop) -> None:
    """As asgiref's SyncToAsync does: async_to_sync in this worker thread (pushing an event to a group) runs on
    the loop that handed the step over."""
    SyncToAsync.threadlocal.main_event_loop = loop
    SyncToAsync.threadlocal.main_event_loop_pid = os.getpid()


def _step(loop: asyncio.AbstractEventLoop, function: Callable[..., T], args: tuple[Any, ...]) -> T:
    _serve_loop(loop)
    try:
        return function(*args)
    finally:
        close_old_connections()  # CONN_MAX_AGE 0: the connection goes back to the pool


async def run_in(pool: str, function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` in a thread of that pool, with (a copy of) the caller's context; connections closed
    after. The executor's own hand-off, not asgiref's sync_to_async: a step hands its result back by value and
    leaves no context variable set, so sync_to_async's copying of the context back is not needed (as `hop`
    does)."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    return await loop.run_in_executor(executor(pool), context.run, _step, loop, function, args)


# --- Hops: a synchronous step of a request served on the event loop ----------------------------------------

_hops_to: contextvars.ContextVar[ThreadPoolExecutor | None] = contextvars.ContextVar("hops_to", default=None)


@contextmanager
def own_threads() -> Iterator[None]:
    """Hops in this block go to the `gateway` pool (the gateway's ASGI route, a chat answer's end); outside it,
    to the caller's thread as Django's handlers arrange it (thread_sensitive), which is what tests driving the
    views directly need."""
    token = _hops_to.set(executor(GATEWAY))
    try:
        yield
    finally:
        _hops_to.reset(token)


def _hop_step(
    loop: asyncio.AbstractEventLoop, handling: BaseException | None, function: Callable[..., Any], args: Any,
    kwargs: Any,
) -> Any:  # fmt: skip
    """A hop's step, in a worker thread (run in a copy of the caller's context). A step called while an
    exception is handled (response_for_exception) sees it in sys.exc_info (its log), as under sync_to_async."""
    _serve_loop(loop)
    try:
        if handling is not None:
            try:
                raise handling
            except BaseException:
                return function(*args, **kwargs)
        return function(*args, **kwargs)
    finally:
        release_connections()  # the next hop may be on another thread, seconds later


async def hop(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a synchronous step (the ORM, blocking Redis, billing) in a worker thread, with this context.

    Inside `own_threads` a hop is the executor's own hand-off (a copy of the context, one future), not asgiref's
    sync_to_async: the steps hand their results back by value and leave no context variable set, so its
    copying of the context back is not needed, and it cost more CPU than most steps."""
    pool = _hops_to.get()
    if pool is None:
        return await sync_to_async(function, thread_sensitive=True)(*args, **kwargs)
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    handling = sys.exc_info()[1]
    return await loop.run_in_executor(pool, context.run, _hop_step, loop, handling, function, args, kwargs)


async def stream_step(function: Callable[..., T], *args: Any) -> T:
    return await run_in(STREAM, function, *args)


async def db_step(function: Callable[..., T], *args: Any) -> T:
    return await run_in(WEBSOCKET_DB, function, *args)


class _End:
    """The last item of a pump: the iterator ended, or raised `error`."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class _Pump:
    """Items from a producer thread to the event loop: appended in the thread, taken in batches on the loop,
    with at most one wake-up of the loop scheduled at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: deque[Any] = deque()
        self.ready = asyncio.Event()
        self.lock = threading.Lock()
        self.waking = False
        self.abandoned = False  # the loop side stopped listening: the producer stops at its next item

    def put(self, item: Any) -> None:  # in the producer's thread
        self.items.append(item)
        with self.lock:
            if self.waking:
                return  # a wake-up is scheduled and has not run yet: it will find this item too
            self.waking = True
        try:
            self.loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop is closed (the server is stopping): nobody is listening
            self.abandoned = True

    def _wake(self) -> None:  # on the loop
        with self.lock:
            self.waking = False
        self.ready.set()

    async def take(self) -> list[Any]:
        while not self.items:
            self.ready.clear()
            if self.items:
                break
            await self.ready.wait()
        batch = []
        while self.items:
            batch.append(self.items.popleft())
        return batch


def _produce(pump: _Pump, events: Iterator[Any], enter: Callable[[], Any]) -> None:
    """The whole iterator in this thread, each item handed to the pump; closed here, where it ran."""
    from saas.core.db import release_connections

    error: BaseException | None = None
    try:
        with enter():
            try:
                for item in events:
                    pump.put(item)
                    release_connections()  # the next item may be seconds away (a model's tokens)
                    if pump.abandoned:
                        break
            finally:
                close = getattr(events, "close", None)
                if close is not None:
                    close()  # an unfinished answer closes its upstream call and records what it has
    except BaseException as exc:  # handed to the loop side, which raises it there
        error = exc
    finally:
        close_old_connections()
        pump.put(_End(error))


async def stream_to(
    events: Iterator[T], deliver: Callable[[list[T]], Awaitable[None]], *, enter: Callable[[], Any],
    last: Callable[[T], bool] = lambda item: False,
) -> None:  # fmt: skip
    """Iterate `events` (a synchronous iterator that blocks, such as an answer streamed from the gateway) in
    one thread of the stream pool, inside the context manager `enter()` makes (an org scope), and await
    `deliver(batch)` on the loop for the items that arrived since the last batch, in order. An exception the
    iterator raises is raised here once the items before it were delivered. If delivering fails (or this is
    cancelled), the iterator is closed in its thread after its next item. Once an item for which `last` is
    true was delivered (an answer's "done"), this returns: the iterator runs to its end in its thread."""
    pump = _Pump(asyncio.get_running_loop())
    producer = asyncio.ensure_future(run_in(STREAM, _produce, pump, events, enter))
    try:
        while True:
            batch = await pump.take()
            end = batch.pop() if isinstance(batch[-1], _End) else None
            if batch:
                await deliver(batch)
                if end is None and any(last(item) for item in batch):
                    producer.add_done_callback(_retrieve)  # it finishes (records, closes) on its own
                    return
            if end is not None:
                if end.error is not None:
                    raise end.error
                break
    except BaseException:
        pump.abandoned = True
        producer.add_done_callback(_retrieve)
        raise
    await producer


def _retrieve(future: "asyncio.Future[Any]") -> None:
    if not future.cancelled():
        future.exception()  # retrieved: an abandoned producer's outcome is not worth a warning


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
