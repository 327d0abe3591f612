"""Readiness checks, one function per component. Each returns a ComponentStatus and never raises: a probe
must answer within seconds and name what is broken, whatever is broken."""

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor

from saas.core.redis import get_redis

BEAT_HEARTBEAT_KEY = "crewdesk:beat:heartbeat"
BEAT_STALE_AFTER_SECONDS = 120


@dataclass(frozen=True)
class ComponentStatus:
    ok: bool
    detail: str
    required: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(data.pop("extra"))
        return data


def _failure(exc: BaseException) -> str:
    # The first line only: driver errors can run to a page.
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}".rstrip(": ")


def check_database() -> ComponentStatus:
    """A connection within the connect timeout (DATABASE_CONNECT_TIMEOUT): from the pool, a probe does not wait
    the pool's DATABASE_POOL_TIMEOUT, which is for requests queueing for a connection, not for a server that
    is down."""
    connection = connections[DEFAULT_DB_ALIAS]
    try:
        pool = getattr(connection, "pool", None)  # psycopg's pool when DATABASE_POOL is on (the PostgreSQL backend)
        if pool is not None:
            timeout = float(connection.settings_dict["OPTIONS"].get("connect_timeout") or 3)
            pool.open()  # as Django opens it on a first connection (a no-op once open)
            with pool.connection(timeout=timeout) as raw:
                (version,) = raw.execute("SELECT current_setting('server_version')").fetchone()
        else:
            with connection.cursor() as cursor:
                cursor.execute("SELECT current_setting('server_version')")
                (version,) = cursor.fetchone()
        return ComponentStatus(True, f"PostgreSQL {version}")
    except Exception as exc:
        return ComponentStatus(False, _failure(exc))


def check_pgvector() -> ComponentStatus:
    try:
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            row = cursor.fetchone()
        if row is None:
            return ComponentStatus(False, "the vector extension is not installed (run migrations)")
        return ComponentStatus(True, f"vector {row[0]}", extra={"version": row[0]})
    except Exception as exc:
        return ComponentStatus(False, _failure(exc))


def check_migrations() -> ComponentStatus:
    try:
        connection = connections[DEFAULT_DB_ALIAS]
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        if plan:
            pending = [f"{m.app_label}.{m.name}" for m, _ in plan]
            return ComponentStatus(False, f"{len(pending)} pending migration(s)", extra={"pending": pending[:20]})
        return ComponentStatus(True, "up to date")
    except Exception as exc:
        return ComponentStatus(False, _failure(exc))


def check_redis() -> ComponentStatus:
    try:
        client = get_redis()
        client.ping()
        info = client.info("server")
        name = "valkey" if "valkey_version" in info else "redis"
        version = info.get("valkey_version") or info.get("redis_version")
        return ComponentStatus(True, f"{name} {version}")
    except Exception as exc:
        return ComponentStatus(False, _failure(exc))


def check_celery(*, timeout: float = 1.5) -> ComponentStatus:
    from saas.celery import app

    try:
        replies = app.control.ping(timeout=timeout)
    except Exception as exc:
        return ComponentStatus(False, _failure(exc))
    workers = sorted(name for reply in replies or [] for name in reply)
    if not workers:
        return ComponentStatus(False, f"no worker answered a ping within {timeout}s")
    return ComponentStatus(True, f"{len(workers)} worker(s)", extra={"workers": workers})


def check_beat() -> ComponentStatus:
    """Informational: a silent scheduler does not make the web tier unready."""
    try:
        last = get_redis().get(BEAT_HEARTBEAT_KEY)
    except Exception as exc:
        return ComponentStatus(False, _failure(exc), required=False)
    if last is None:
        return ComponentStatus(False, "no heartbeat yet", required=False)
    age = time.time() - float(last)
    if age > BEAT_STALE_AFTER_SECONDS:
        return ComponentStatus(False, f"last heartbeat {age:.0f}s ago", required=False)
    return ComponentStatus(True, f"last heartbeat {age:.0f}s ago", required=False)


# Informational checks of higher layers (the LLM gateway's providers): they show on /readyz and never make it
# fail. A registry because saas/core cannot import the apps above it.
_informational: dict[str, Callable[[], ComponentStatus]] = {}


def register_informational_check(name: str, check: Callable[[], ComponentStatus]) -> None:
    _informational[name] = check


def readiness() -> dict[str, ComponentStatus]:
    results: dict[str, ComponentStatus] = {"database": check_database()}
    if results["database"].ok:
        results["pgvector"] = check_pgvector()
        results["migrations"] = check_migrations()
    else:
        skipped = ComponentStatus(False, "skipped: the database is unreachable")
        results["pgvector"] = results["migrations"] = skipped
    results["redis"] = check_redis()
    if results["redis"].ok:
        results["celery"] = check_celery()
        results["beat"] = check_beat()
    else:
        results["celery"] = ComponentStatus(False, "skipped: the broker (redis) is unreachable")
        results["beat"] = ComponentStatus(False, "skipped: redis is unreachable", required=False)
    for name, check in _informational.items():
        if not results["database"].ok:  # they read their configuration from it: each would wait in vain
            results[name] = ComponentStatus(False, "skipped: the database is unreachable", required=False)
            continue
        try:
            status = check()
        except Exception as exc:
            status = ComponentStatus(False, _failure(exc))
        results[name] = ComponentStatus(status.ok, status.detail, required=False, extra=status.extra)
    return results
