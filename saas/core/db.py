"""Database connections around slow waits: a connection is held while queries run, never while a model thinks.

Each process has a pool of DATABASE_POOL_MAX connections (psycopg's pool, saas/settings/base.py). Under daphne,
a request's synchronous code runs in a worker thread, which takes a pooled connection at its first query and,
left alone, keeps it until the request ends (Django gives it back on `request_finished`). A request that then
waits seconds for a model would keep its connection for all of that time, and the pool's eleventh such request
would wait DATABASE_POOL_TIMEOUT seconds and fail. So code that is about to wait on something slow calls
`release_connections()` first: the connection goes back to the pool, and the next query (the ledger row after
the answer) takes one again, for milliseconds.

An open transaction keeps its connection (giving it back would lose the transaction): release is a no-op inside
`transaction.atomic`, which is why ATOMIC_REQUESTS stays off (a startup check says so, saas/core/checks.py).
"""

import threading
from collections.abc import Callable, Hashable
from typing import Any

from django.db import connections
from django.db.models import QuerySet
from django.db.models.query import get_related_populators


def release_connections() -> int:
    """Give this thread's idle database connections back to the pool (or close them, without a pool); the next
    query takes one again. Connections inside a transaction are kept. Returns how many were released."""
    released = 0
    for connection in connections.all(initialized_only=True):
        if connection.connection is None or connection.in_atomic_block or not connection.get_autocommit():
            continue
        connection.close()
        released += 1
    return released


def atomic_requests_databases() -> list[str]:
    """The databases configured with ATOMIC_REQUESTS, whose requests could never release their connection."""
    return [alias for alias in connections if connections.settings[alias].get("ATOMIC_REQUESTS")]


class CompiledQuery:
    """A hot path's fixed query, compiled to SQL once per process and then run with new values: for a small
    query Django's compiler costs more CPU than the database (a websocket's access check, run on every
    handshake and before every frame, spent 1.5 of its 2 ms there). `build(**values)` makes the queryset
    (select_related included); it is compiled once with the `sentinels` given (distinct values no real
    argument equals), and each `first(**values)` runs the SQL with the values in the sentinels' places and
    builds the instance (and its related objects) as Django's ModelIterable does."""

    def __init__(self, build: Callable[..., QuerySet[Any]], **sentinels: Any) -> None:
        self.build, self.sentinels = build, sentinels
        self._compiled: tuple[Any, ...] | None = None
        self._lock = threading.Lock()

    def _compile(self) -> tuple[Any, ...]:
        with self._lock:
            if self._compiled is None:
                queryset = self.build(**self.sentinels)[:1]
                compiler = queryset.query.get_compiler(using=queryset.db)
                sql, params = compiler.as_sql()
                by_value = {value: name for name, value in self.sentinels.items()}
                slots = [(by_value.get(p) if isinstance(p, Hashable) else None, p) for p in params]
                if sorted(name for name, _ in slots if name) != sorted(self.sentinels):
                    raise ValueError("Each sentinel must appear once among the query's parameters.")
                select, klass_info = compiler.select, compiler.klass_info
                start, end = klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1
                init_list = [f[0].target.attname for f in select[start:end]]
                converters = compiler.get_converters([s[0] for s in select[: compiler.col_count]])
                # django-stubs 6 types Django 6.0's signature (fetch_mode); the installed Django 5.2 has none.
                populators = get_related_populators(klass_info, select, queryset.db)  # type: ignore[call-arg]
                self._compiled = (queryset.db, sql, slots, klass_info["model"], start, end, init_list, converters,
                                  populators)  # fmt: skip
            return self._compiled

    def first(self, **values: Any) -> Any:
        db, sql, slots, model, start, end, init_list, converters, populators = self._compiled or self._compile()
        connection = connections[db]
        with connection.cursor() as cursor:
            cursor.execute(sql, [values[name] if name else constant for name, constant in slots])
            found = cursor.fetchone()
        if found is None:
            return None
        row = list(found)
        for position, (functions, expression) in converters.items():
            value = row[position]
            for function in functions:
                value = function(value, expression, connection)
            row[position] = value
        instance = model.from_db(db, init_list, row[start:end])
        for populator in populators:
            populator.populate(row, instance)
        return instance
