"""The stack every benchmark runs on: embedded PostgreSQL + pgvector and Valkey in .devdata/bench (kept between
runs, apart from the dev stack's), migrated, with Django set up in this process."""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


@contextmanager
def bench_stack(root: Path | None = None, postgres: dict[str, str] | None = None, **env: str) -> Iterator[None]:
    """`env` is set before Django starts (and inherited by the processes a benchmark starts). `root`: the data
    directory (default .devdata/bench); `postgres`: server settings (ALTER SYSTEM, restarting if they need it)."""
    sys.path.insert(0, str(BASE_DIR))
    from saas.devstack import EmbeddedServices

    for var in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(var, None)
    services = EmbeddedServices(root or BASE_DIR / ".devdata" / "bench")
    urls = services.start()
    if postgres and _configure(urls["DATABASE_URL"], postgres):
        services.stop()
        urls = services.start()
    os.environ.update(urls)
    try:
        os.environ.update({"DJANGO_SETTINGS_MODULE": "saas.settings.local", "LOG_LEVEL": "WARNING", **env})
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=BASE_DIR, check=True)
        import django

        django.setup()
        yield
    finally:
        services.stop()


def _configure(url: str, settings: dict[str, str]) -> bool:
    """Applies server settings; True if some only take effect after a restart."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for name, value in settings.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        conn.execute("SELECT pg_reload_conf()")
    time.sleep(1)  # the reload is a signal: let the server read the file before asking what is pending
    with psycopg.connect(url, autocommit=True) as conn:
        return bool(conn.execute("SELECT 1 FROM pg_settings WHERE pending_restart").fetchone())
