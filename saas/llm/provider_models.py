"""Providers as data (imported by saas/llm/models.py): where models live and how to reach them.

`Provider` rows are the operator's (seeded from the `providers:` section of saas/llm/registry.yaml, edited in
the admin); each operator model (ModelConfig.upstream) names one. `OrgProvider` rows are an org's own
("bring your own key"): added by the org's admins, used only by that org, erased with it. Keys and extra
headers are encrypted at rest (saas.core.crypto) and never shown again: only `key_hint` is."""

from typing import ClassVar

from django.db import models

from saas.core import crypto
from saas.core.models import BaseModel
from saas.core.tenancy import OrgOwnedModel


class ProviderKind(models.TextChoices):
    OPENAI = "openai", "OpenAI"
    ANTHROPIC = "anthropic", "Anthropic"
    AZURE_OPENAI = "azure_openai", "Azure OpenAI"
    GEMINI = "gemini", "Google Gemini"
    OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible (Ollama, vLLM, OpenRouter, ...)"
    LOCAL = "local", "Local engine"


class ProviderConnection(models.Model):
    """How to reach an upstream: its protocol, base URL, key, extra headers and timeout."""

    kind = models.CharField(max_length=20, choices=ProviderKind.choices)
    base_url = models.URLField(max_length=500, blank=True, help_text="Empty: the provider's public API.")
    api_key_encrypted = models.TextField(blank=True, editable=False)
    key_hint = models.CharField(max_length=12, blank=True, editable=False, help_text="The key's last characters.")
    headers_encrypted = models.TextField(blank=True, editable=False)
    api_version = models.CharField(max_length=32, blank=True, help_text="Azure OpenAI's API version.")
    timeout_seconds = models.FloatField(null=True, blank=True, help_text="Empty: the router's attempt timeout.")
    enabled = models.BooleanField(default=True)

    api_key = crypto.encrypted_text("api_key_encrypted")
    headers = crypto.encrypted_json("headers_encrypted")

    class Meta:
        abstract = True

    def set_key(self, key: str) -> None:
        self.api_key = key
        self.key_hint = f"…{key[-4:]}" if len(key) >= 12 else ("…" if key else "")


class Provider(BaseModel, ProviderConnection):
    """An operator's provider; `ModelConfig.upstream` names one."""

    name = models.SlugField(max_length=32, unique=True)
    api_key_env = models.CharField(
        max_length=64, blank=True, help_text="An environment variable holding the key (used when no key is saved)."
    )

    def __str__(self) -> str:
        return self.name


class OrgProvider(OrgOwnedModel, ProviderConnection):
    """An org's own provider and the models of it the org's admins enabled (`enabled_models`: a list of
    {"id", "kind", "context_window", "supports_tools", "supports_json", "supports_vision"})."""

    name = models.CharField(max_length=60)
    slug = models.SlugField(max_length=24, help_text="Model names are <slug>/<model id>.")
    enabled_models = models.JSONField(default=list, blank=True)
    discovered_models = models.JSONField(default=list, blank=True, help_text="What the last connection test listed.")
    tested_at = models.DateTimeField(null=True, blank=True)
    test_error = models.CharField(max_length=300, blank=True)

    class Meta(OrgOwnedModel.Meta):
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["organization", "slug"], name="llm_orgprovider_slug_per_org")
        ]

    def __str__(self) -> str:
        return self.name
