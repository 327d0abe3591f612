"""Process-local copies of rows that are read on every request and change rarely (the model registry, org AI
settings, API keys), trusted only while a version counter in Redis stands still.

Saving or deleting a watched model through the ORM drops this process's copy at once and, when the
transaction commits, bumps the counter, so every other web and worker process reloads on its next read. A
copy is also dropped when older than its maximum age (for changes made around the ORM: SQL, migrations);
a maximum age of 0 means no copy is kept. When Redis cannot be asked, no copy is trusted.

What a memo hands out is shared between threads: read it, never save it (copy first).

Within an API request (`versions_read_once(optimistic=True)`) a copy young enough may be used before its version
is read: the version it was loaded at is *assumed*, and the request's first round trip that can carry the check
confirms it (the rate-limit script compares the assumed versions before it counts anything, and reads every
memo's version for the rest of the request), so the common request spends no round trip on versions alone. An
assumption that turns out wrong raises `Stale`: whatever was decided with the old copy is decided again with
fresh ones (saas.core.api.OrgScopedMixin.initial), and nothing was counted meanwhile.
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
UNCHECKED = "*"  # in `check_versions`' expected values: read the version, compare nothing


class Stale(Exception):
    """A copy used on assumption was older than its version in Redis: redo what it decided, with fresh copies."""


class _Read(dict[str, Any]):
    """The versions read in one versions_read_once block (version key -> value). `optimistic`: a copy young
    enough is used before its version is read, and the version it was loaded at waits in `assumed` (version key
    -> value) until a round trip confirms it."""

    def __init__(self, *, optimistic: bool) -> None:
        super().__init__()
        self.optimistic = optimistic
        self.assumed: dict[str, Any] = {}


# Inside versions_read_once(): every memo's version, read in one MGET at the first need.
_versions: contextvars.ContextVar[_Read | None] = contextvars.ContextVar("memo_versions", default=None)


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
        held = self._copy
        read = _versions.get()
        if (
            read is not None
            and read.optimistic
            and self.version_key not in read
            and held is not None
            and read.assumed.get(self.version_key, held[0]) == held[0]
            and time.monotonic() - held[1] < max_age
        ):
            read.assumed[self.version_key] = held[0]  # confirmed (or found stale) by the request's next round trip
            return held[2]
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
def versions_read_once(*, optimistic: bool = False) -> Iterator[None]:
    """For a block as short as one API request: each memo's version is read from Redis once (all of them in
    one MGET) instead of at every use. A change published during the block is seen by the next block.
    `optimistic`: copies are used on assumption until confirmed (see the module); the block's owner confirms
    them (`confirm`, or a script given `check_versions`) before it acts on what they decided."""
    token = _versions.set(_Read(optimistic=optimistic))
    try:
        yield
    finally:
        _versions.reset(token)


def check_versions() -> tuple[list[str], list[Any]]:
    """For a script that can carry the version check of this block: the version keys not read yet (every
    memo's) and, for each, the version assumed (UNCHECKED where none was). The script compares them before it
    changes anything and hands the versions back to `versions_read`. ([], []) outside a block."""
    read = _versions.get()
    if read is None:
        return [], []
    keys = [key for key in dict.fromkeys(memo.version_key for memo in _memos) if key not in read]
    return keys, [read.assumed.get(key, UNCHECKED) for key in keys]


def versions_read(keys: list[str], values: list[Any]) -> None:
    """The versions a script read for `check_versions`: kept for the rest of the block; an assumption they
    contradict raises Stale (and the block assumes nothing more)."""
    read = _versions.get()
    if read is None:
        return
    read.update(zip(keys, values, strict=True))
    _settle(read)


def confirm() -> None:
    """The assumptions still open, checked now (one MGET); raises Stale when one was wrong. When Redis cannot
    be asked, nothing assumed is trusted either (Stale: redone from the database)."""
    read = _versions.get()
    if read is None or not read.assumed:
        return
    keys = [key for key in read.assumed if key not in read]
    try:
        values = get_redis().mget(keys) if keys else []
    except Exception:
        stop_assuming()
        raise Stale("the versions could not be read") from None
    read.update(zip(keys, values, strict=True))
    _settle(read)


def assumptions_hold() -> bool:
    """`confirm`, as a yes or no."""
    try:
        confirm()
    except Stale:
        return False
    return True


def stop_assuming() -> None:
    """The rest of this block reads each version before using a copy (after Stale: the checks run again)."""
    read = _versions.get()
    if read is not None:
        read.optimistic = False
        read.assumed.clear()


def _settle(read: _Read) -> None:
    """Assumptions whose version has been read are settled: kept out of `assumed`, or Stale when one was wrong."""
    wrong = [key for key, value in read.assumed.items() if key in read and read[key] != value]
    read.assumed = {key: value for key, value in read.assumed.items() if key not in read}
    if wrong:
        stop_assuming()
        raise Stale(", ".join(wrong))


def forget_all_local() -> None:
    """Tests call this between tests, as Django's test framework clears its ContentType cache."""
    for memo in _memos:
        memo.forget_local()
        memo.publish_change()
