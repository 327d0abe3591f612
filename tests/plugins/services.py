"""Real PostgreSQL+pgvector and Valkey for the test session, started once before Django reads its settings.

With DATABASE_URL / REDIS_URL already set (CI with its own servers, docker-compose), those are used and
nothing is started. Data of the embedded servers lives in .devdata/test (or $CREWDESK_TEST_DATA_DIR).
"""

import os
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
    return (yield)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _services is not None:
        _services.stop()
