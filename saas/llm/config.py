"""The gateway's configuration as each process sees it: the providers, the model registry and the orgs' AI
settings and own providers, kept in
memory (saas/core/memo.py) so that a call does not pay two or three queries for rows that change a few times
a month. Changes through the ORM (the admin, the registry sync, the org settings page) reach every process
on its next call; `LLM_CONFIG_CACHE_SECONDS` bounds the age of a copy anyway, and 0 turns the copy off.
"""

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from saas.core import on_loop
from saas.core.memo import Memo, register
from saas.llm.models import ModelConfig, OrgLLMSettings, OrgProvider, Provider

MAX_ORGS = 10_000  # org settings kept per copy; past that, settings are read without being kept


@dataclass
class Snapshot:
    models: dict[str, ModelConfig]
    _policies: dict[Any, OrgLLMSettings] = field(default_factory=dict)
    providers: dict[str, Provider] = field(default_factory=dict)  # the operator's, by name
    _org_providers: dict[Any, list[OrgProvider]] = field(default_factory=dict)

    def org_providers(self, org_id: Any) -> list[OrgProvider]:
        """The org's own enabled providers (bring your own key), by slug."""
        found = self._org_providers.get(org_id)
        if found is None:
            found = on_loop.blocking(list, OrgProvider.objects.for_org(org_id).filter(enabled=True).order_by("slug"))
            if len(self._org_providers) < MAX_ORGS:
                self._org_providers[org_id] = found
        return found

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
            policy = on_loop.blocking(OrgLLMSettings.objects.for_org(org).first) or OrgLLMSettings(organization=org)
            if len(self._policies) < MAX_ORGS:
                self._policies[org.pk] = policy
        return policy


def _load() -> Snapshot:
    return Snapshot(
        {m.alias: m for m in ModelConfig.objects.all()}, providers={p.name: p for p in Provider.objects.all()}
    )


memo = register(Memo("llm-config", _load, max_age=lambda: settings.LLM_CONFIG_CACHE_SECONDS))


def current() -> Snapshot:
    """The configuration for one call (take it once per call: each take costs a Redis GET)."""
    return memo.current()
