"""The stack every benchmark runs on: embedded PostgreSQL + pgvector and Valkey in .devdata/bench (kept between
runs, apart from the dev stack's), migrated, with Django set up in this process."""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


@contextmanager
def bench_stack(**env: str) -> Iterator[None]:
    """`env` is set before Django starts (and inherited by the processes a benchmark starts)."""
    sys.path.insert(0, str(BASE_DIR))
    from saas.devstack import EmbeddedServices

    for var in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(var, None)
    services = EmbeddedServices(BASE_DIR / ".devdata" / "bench")
    os.environ.update(services.start())
    try:
        os.environ.update({"DJANGO_SETTINGS_MODULE": "saas.settings.local", "LOG_LEVEL": "WARNING", **env})
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=BASE_DIR, check=True)
        import django

        django.setup()
        yield
    finally:
        services.stop()
