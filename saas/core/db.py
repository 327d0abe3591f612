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

from django.db import connections


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
