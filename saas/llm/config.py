"""The gateway's configuration as each process sees it: the model registry and the orgs' AI settings, read
from the database once and kept in memory, so that a call does not pay two or three queries for rows that
change a few times a month.

Freshness: saving or deleting a ModelConfig or an OrgLLMSettings through the ORM (the admin, the registry
sync, the org settings page) drops this process's copy at once and, when its transaction commits, bumps a
version counter in Redis. Every `current()` compares that counter (one GET) and reloads on a change, so the
other web and worker processes follow on their next call. `LLM_CONFIG_CACHE_SECONDS` bounds the age of a
copy anyway (for changes made around the ORM: SQL, migrations); 0 reads the database on every call. If
Redis cannot be asked, the copy is not trusted and the database is read.

The objects handed out are shared between threads: read them, never save them.
"""

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save

from saas.core.redis import get_redis
from saas.llm.models import ModelConfig, OrgLLMSettings

logger = logging.getLogger(__name__)
VERSION_KEY = "crewdesk:llm:config-version"
MAX_ORGS = 10_000  # org settings kept per copy; past that, settings are read without being kept


@dataclass
class Snapshot:
    version: str | None
    loaded_at: float
    models: dict[str, ModelConfig]
    _policies: dict[Any, OrgLLMSettings] = field(default_factory=dict)

    def model(self, alias: str) -> ModelConfig | None:
        return self.models.get(alias)

    def chat_models(self) -> list[ModelConfig]:
        """Enabled chat models, by alias."""
        return sorted(
            (m for m in self.models.values() if m.enabled and m.kind == ModelConfig.Kind.CHAT), key=lambda m: m.alias
        )

    def policy(self, org: Any) -> OrgLLMSettings:
        policy = self._policies.get(org.pk)
        if policy is None:
            policy = OrgLLMSettings.objects.for_org(org).first() or OrgLLMSettings(organization=org)
            if len(self._policies) < MAX_ORGS:
                self._policies[org.pk] = policy
        return policy


_lock = threading.Lock()
_snapshot: Snapshot | None = None


def _remote_version() -> str | None:
    try:
        value = get_redis().get(VERSION_KEY)
    except Exception:
        return "unavailable"  # never equal to a loaded version: read the database
    return str(value) if value is not None else None


def _load(version: str | None) -> Snapshot:
    return Snapshot(version, time.monotonic(), {m.alias: m for m in ModelConfig.objects.all()})


def current() -> Snapshot:
    """The configuration to use for one call (take it once per call: each take costs a Redis GET)."""
    global _snapshot
    max_age = settings.LLM_CONFIG_CACHE_SECONDS
    version = _remote_version()
    snapshot = _snapshot
    if (
        max_age > 0
        and snapshot is not None
        and version != "unavailable"
        and snapshot.version == version
        and time.monotonic() - snapshot.loaded_at < max_age
    ):
        return snapshot
    fresh = _load(version)
    if max_age > 0 and version != "unavailable":
        with _lock:
            _snapshot = fresh
    return fresh


def forget_local() -> None:
    """Drop this process's copy (tests call it between tests, as Django clears its ContentType cache)."""
    global _snapshot
    with _lock:
        _snapshot = None


def publish_change() -> None:
    try:
        get_redis().incr(VERSION_KEY)
    except Exception:  # the other processes fall back on LLM_CONFIG_CACHE_SECONDS
        logger.warning("Could not publish a gateway configuration change to Redis")


def changed(**kwargs: Any) -> None:
    forget_local()
    transaction.on_commit(publish_change)


def connect_signals() -> None:
    for model in (ModelConfig, OrgLLMSettings):
        post_save.connect(changed, sender=model, dispatch_uid=f"llm-config-saved-{model.__name__}")
        post_delete.connect(changed, sender=model, dispatch_uid=f"llm-config-deleted-{model.__name__}")
