"""Real PostgreSQL+pgvector and Valkey for the test session, started once before Django reads its settings.

With DATABASE_URL / REDIS_URL already set (CI with its own servers, docker-compose), those are used and
nothing is started. Data of the embedded servers lives in .devdata/test (or $CREWDESK_TEST_DATA_DIR).
"""

import os
import sys
import warnings
from pathlib import Path

import pytest

_services = None


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]):
    global _services
    # Importing `saas` loads the Celery app, which defaults DJANGO_SETTINGS_MODULE to the local settings:
    # name the test settings first (the ini value, unless the environment already chose).
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", early_config.getini("DJANGO_SETTINGS_MODULE"))
    from saas.devstack import BASE_DIR, EmbeddedServices

    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    root = Path(os.environ.get("CREWDESK_TEST_DATA_DIR") or BASE_DIR / ".devdata" / "test")
    _services = EmbeddedServices(root)
    os.environ.update(_services.start())
    _prepare_generated_migrations(root / "generated")
    return (yield)


GENERATED_MIGRATIONS = "crewdesk_test_migrations"  # saas/settings/test.py's MIGRATION_MODULES name it


def _prepare_generated_migrations(path: Path) -> None:
    """An empty package for the migrations tests/conftest.py writes from dj-stripe's models at the start of the
    session (why: saas/settings/test.py), importable here and in the live processes tests start."""
    package = path / GENERATED_MIGRATIONS / "djstripe"
    package.mkdir(parents=True, exist_ok=True)
    for stale in package.glob("*.py"):
        stale.unlink()  # the dj-stripe installed now is what they are written from
    (path / GENERATED_MIGRATIONS / "__init__.py").touch()
    (package / "__init__.py").touch()
    sys.path.insert(0, str(path))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(path), os.environ.get("PYTHONPATH")) if p)
    os.environ["CREWDESK_GENERATED_MIGRATIONS"] = "1"


def pytest_unconfigure(config: pytest.Config) -> None:
    if _services is not None:
        _services.stop()
