"""Synchronous code run on the event loop, its waits awaited instead of blocking the thread.

The gateway's admission (API key, rate limits, policy, quota: synchronous code shared with the synchronous
views) runs on the loop of the API server rather than in a worker thread: `await run(fn, ...)` calls `fn` in a
greenback portal (a greenlet of the request's task), where our Redis client awaits its commands on the asyncio
client (saas/core/redis.py) and each `blocking(step)` (a step on the database: the ORM cannot run on the loop)
is awaited in a hop to a worker thread. Why: a hop costs more CPU than the admission's own work saves by
running in parallel (each thread hand-off and every blocking Redis reply passes the GIL between the loop and
the thread), measured at about 0.8 ms of a call's 4.5.

Anything else that would block inside (the ORM outside `blocking`) fails loudly: Django refuses synchronous
database access on a thread running an event loop (SynchronousOnlyOperation).
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import greenback

from saas.core import threads

T = TypeVar("T")
_active: contextvars.ContextVar[bool] = contextvars.ContextVar("on_loop", default=False)


def active() -> bool:
    """Whether this code runs on the loop inside `run` (and so must await rather than block)."""
    return _active.get()


def await_(awaitable: Awaitable[T]) -> T:
    """The awaitable's result, awaited on the loop (only where active())."""
    return greenback.await_(awaitable)


async def run(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`function(*args, **kwargs)` on the loop, in a portal where its waits are awaited."""
    token = _active.set(True)
    try:
        return await greenback.with_portal_run_sync(function, *args, **kwargs)
    finally:
        _active.reset(token)


def _off_loop(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    token = _active.set(False)  # the hop's thread blocks as usual
    try:
        return function(*args, **kwargs)
    finally:
        _active.reset(token)


def blocking(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A step that blocks (the ORM): called as it is, or from `run`'s portal in a hop to a worker thread."""
    if not _active.get():
        return function(*args, **kwargs)
    return await_(threads.hop(_off_loop, function, *args, **kwargs))
