"""Personal data, store by store: what each app keeps, how to export it and how to erase it.

Each app that keeps customer data registers a `Store` at startup (in its AppConfig.ready), so that exports
(accounts/exports.py) and erasure (accounts/erasure.py) reach every store without accounts importing the layers
above it, and the privacy page (/privacy/) lists exactly what the code keeps. A store added without registering
is caught by the erasure tests, which scan every table, the file storage and Redis.

Erasers work in batches: each call erases at most `batch_size` things in its own transaction and returns how
many, so the job that calls them until they return 0 can be killed anywhere and rerun: what is gone stays gone,
and the rest is found again by the same query.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol


class ExportSink(Protocol):
    """Where an export writes: JSON files and original files, by path inside the archive."""

    def json(self, path: str, data: Any) -> None: ...

    def file(self, path: str, open_file: Callable[[], Any]) -> None: ...


@dataclass(frozen=True)
class Subject:
    """Whose data a user erasure is about. `pseudonym` replaces their name where a row must stay; `texts` are
    the strings that identify them (email, name), scrubbed from labels and metadata of the rows that stay."""

    user_id: Any
    org_id: Any
    pseudonym: str
    texts: tuple[str, ...]
    transfer_content: bool  # the org's policy: hand what they made to the org (True) or delete it


@dataclass(frozen=True)
class Store:
    name: str  # "documents", "agents", ... (a key of the erasure record's counts)
    title: str  # what the privacy page calls it
    what: str  # for the privacy page: what is kept, in a person's words
    where: str  # "PostgreSQL (text encrypted)", "file storage", "Redis"
    kept: str | Callable[[], str]  # how long, in words (a callable reads the settings the code uses)
    retention_setting: str = ""  # the Organization field with the days to keep, when there is one
    export_user: Callable[..., None] | None = None  # (*, sink, user_id, org_id, folder) -> None
    export_org: Callable[..., None] | None = None  # (*, sink, org_id, folder) -> None
    erase_user: Callable[..., int] | None = None  # (*, subject, batch_size) -> things erased in one batch
    erase_org: Callable[..., int] | None = None  # (*, org_id, batch_size) -> things erased in one batch

    def kept_text(self) -> str:
        return self.kept() if callable(self.kept) else self.kept


_stores: list[Store] = []


def register_store(store: Store) -> None:
    if any(existing.name == store.name for existing in _stores):
        raise ValueError(f"a privacy store named {store.name!r} is already registered")
    _stores.append(store)


def stores() -> list[Store]:
    """In registration order (INSTALLED_APPS order)."""
    return list(_stores)


def erasure_order() -> Iterator[Store]:
    """Higher layers first (the reverse of registration): what points at a row goes before the row."""
    return reversed(_stores)


@dataclass(frozen=True)
class Notice:
    """A paragraph of the privacy page that a layer owns: who else receives data, what a policy does. `text`
    reads the settings the code runs with, so the page says what the server actually does."""

    title: str
    text: Callable[[], str]


_notices: list[Notice] = []


def register_notice(title: str, text: Callable[[], str]) -> None:
    _notices.append(Notice(title, text))


def notices() -> list[dict[str, str]]:
    return [{"title": notice.title, "text": notice.text()} for notice in _notices]
