"""Process-local copies of rows that are read on every request and change rarely (the model registry, org AI
settings, API keys), trusted only while a version counter in Redis stands still.

Saving or deleting a watched model through the ORM drops this process's copy at once and, when the
transaction commits, bumps the counter, so every other web and worker process reloads on its next read. A
copy is also dropped when older than its maximum age (for changes made around the ORM: SQL, migrations);
a maximum age of 0 means no copy is kept. When Redis cannot be asked, no copy is trusted.

What a memo hands out is shared between threads: read it, never save it (copy first).
"""

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from django.db import models, transaction
from django.db.models.signals import post_delete, post_save

from saas.core import on_loop
from saas.core.redis import get_redis

logger = logging.getLogger(__name__)
T = TypeVar("T")
_UNAVAILABLE = object()
# Inside versions_read_once(): every memo's version, read in one MGET at the first need.
_versions: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("memo_versions", default=None)


class Memo(Generic[T]):
    def __init__(self, name: str, load: Callable[[], T], max_age: Callable[[], float]) -> None:
        self.name = name
        self.version_key = f"crewdesk:memo:{name}:version"
        self._load = load
        self._max_age = max_age
        self._lock = threading.Lock()
        self._copy: tuple[Any, float, T] | None = None  # (version, loaded at, value)

    def _remote_version(self) -> Any:
        read = _versions.get()
        if read is not None:
            if self.version_key not in read:
                others = (memo.version_key for memo in _memos if memo.version_key not in read)
                keys = list(dict.fromkeys([self.version_key, *others]))
                try:
                    read.update(zip(keys, get_redis().mget(keys), strict=True))
                except Exception:
                    return _UNAVAILABLE
            return read.get(self.version_key, _UNAVAILABLE)
        try:
            return get_redis().get(self.version_key)
        except Exception:
            return _UNAVAILABLE

    def current(self) -> T:
        """The value to use now; each call costs one GET in Redis, so take it once per request."""
        max_age = self._max_age()
        version = self._remote_version()  # read before loading: a change during the load forces a reload
        held = self._copy
        if (
            held is not None
            and version is not _UNAVAILABLE
            and held[0] == version
            and time.monotonic() - held[1] < max_age
        ):
            return held[2]
        value = on_loop.blocking(self._load)  # the ORM: in a hop when on the loop
        if max_age > 0 and version is not _UNAVAILABLE:
            with self._lock:
                self._copy = (version, time.monotonic(), value)
        return value

    def forget_local(self) -> None:
        with self._lock:
            self._copy = None

    def publish_change(self) -> None:
        try:
            get_redis().incr(self.version_key)
        except Exception:  # other processes fall back on the maximum age
            logger.warning("Could not publish a change of %s to Redis", self.name)

    def changed(self, **kwargs: Any) -> None:
        """Signal receiver: drop the copy here now, tell the other processes once the change is committed."""
        self.forget_local()
        transaction.on_commit(self.publish_change)

    def watch(self, *watched: type[models.Model]) -> None:
        for model in watched:
            uid = f"memo-{self.name}-{model._meta.label}"
            post_save.connect(self.changed, sender=model, dispatch_uid=f"{uid}-saved", weak=False)
            post_delete.connect(self.changed, sender=model, dispatch_uid=f"{uid}-deleted", weak=False)


_memos: list[Memo[Any]] = []


def register(memo: Memo[T]) -> Memo[T]:
    _memos.append(memo)
    return memo


@contextmanager
def versions_read_once() -> Iterator[None]:
    """For a block as short as one API request: each memo's version is read from Redis once (all of them in
    one MGET) instead of at every use. A change published during the block is seen by the next block."""
    token = _versions.set({})
    try:
        yield
    finally:
        _versions.reset(token)


def forget_all_local() -> None:
    """Tests call this between tests, as Django's test framework clears its ContentType cache."""
    for memo in _memos:
        memo.forget_local()
        memo.publish_change()
