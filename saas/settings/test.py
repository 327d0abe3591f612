"""pytest: the same real PostgreSQL and Redis (tests/plugins/services.py starts them), faster hashing."""

import os

from saas.settings import storage as storage_settings
from saas.settings.base import *  # noqa: F403
from saas.settings.base import ALLOWED_HOSTS, CACHES, CHANNEL_LAYERS, DEVDATA_DIR

SECRET_KEY = "test-only-secret-key-for-pytest-0123456789abcdefghijklmnopqrstuvwxyz"  # noqa: S105
DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Keys of a test session never collide with a running dev stack sharing the same Redis.
CACHES = {"default": {**CACHES["default"], "KEY_PREFIX": "crewdesk-test"}}
CHANNEL_LAYERS = {
    "default": {
        **CHANNEL_LAYERS["default"],
        "CONFIG": {**CHANNEL_LAYERS["default"]["CONFIG"], "prefix": "crewdesk-test:asgi"},
    }
}
# A test worker never takes a dev worker's tasks (or the reverse) when both share one broker.
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_TASK_DEFAULT_QUEUE") or "crewdesk-test"  # a live test's own
CELERY_TASK_ROUTES = {}  # type: ignore[var-annotated]  # the one test worker consumes only its default queue
ALLOWED_HOSTS = [*ALLOWED_HOSTS, "testserver"]
# Uploaded files of tests apart from the dev stack's (the live worker reads them from the same place).
MEDIA_ROOT = os.environ.get("TEST_MEDIA_ROOT") or str(DEVDATA_DIR / "test" / "media")  # a live process's own
STORAGES = {**STORAGES, "default": storage_settings.storage_from_url(STORAGE_URL, media_root=MEDIA_ROOT)}  # noqa: F405
# Ledger rows are written at once (tests read them right after a call); tests of the batched writer turn it on.
LLM_LEDGER = {**LLM_LEDGER, "batched": False}  # noqa: F405
# dj-stripe's 2.10 migration removes 514 fields one at a time, and Django re-renders the related models after
# each: about 90 s of CPU before every test session. The test database gets dj-stripe's schema from one migration
# written from its installed models at the session's start (tests/conftest.py; `makemigrations djstripe --check`
# finds its own migrations end in the same schema). `make run` and deployments apply dj-stripe's real
# migrations, and tests/core/test_devstack.py runs them on a fresh database.
if os.environ.get("CREWDESK_GENERATED_MIGRATIONS"):
    MIGRATION_MODULES = {"djstripe": "crewdesk_test_migrations.djstripe"}
