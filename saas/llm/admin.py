from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from saas.core.admin import LedgerAdmin, OrgOwnedAdmin, plain_fields
from saas.llm import provider_registry
from saas.llm.models import LLMCall, ModelConfig, OrgLLMSettings, OrgProvider, Provider, SemanticCacheEntry


class ProviderForm(forms.ModelForm):
    """The key is write-only: an empty field keeps the saved one; it is never shown (only its hint)."""

    new_api_key = forms.CharField(required=False, strip=True, label="API key",
                                  widget=forms.PasswordInput(render_value=False),
                                  help_text="Empty: keep the saved key (or name an environment variable).")  # fmt: skip

    class Meta:
        model = Provider
        fields = ("name", "kind", "base_url", "api_key_env", "api_version", "timeout_seconds", "enabled")

    def save(self, commit: bool = True) -> Provider:
        row = super().save(commit=False)
        if key := self.cleaned_data.get("new_api_key"):
            row.set_key(key)
        if commit:
            row.save()
        return row


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    """The operator's providers: seeded from saas/llm/registry.yaml, edited here. Health is the circuit
    breaker's state (calls paused after repeated failures) and whether a key or URL makes it usable."""

    form = ProviderForm
    list_display = ("name", "kind", "base_url", "key_hint", "enabled", "configured", "circuit")
    list_filter = ("kind", "enabled")
    readonly_fields = ("key_hint",)

    @admin.display(boolean=True)
    def configured(self, obj: Provider) -> bool:
        return provider_registry.operator_upstream(obj.name) is not None

    @admin.display(description="Circuit")
    def circuit(self, obj: Provider) -> str:
        return str(provider_registry.provider_health().get(obj.name, {}).get("circuit", "unknown"))


@admin.register(OrgProvider)
class OrgProviderAdmin(OrgOwnedAdmin):
    """Teams' own providers (bring your own key), read-only here: their admins manage them; keys never show."""

    list_display = ("name", "organization", "kind", "base_url", "key_hint", "enabled", "circuit", "tested_at")
    list_filter = ("kind", "enabled")
    exclude = ("api_key_encrypted", "headers_encrypted")

    @admin.display(description="Circuit")
    def circuit(self, obj: OrgProvider) -> str:
        return provider_registry.org_provider_circuit(obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ModelConfig)
class ModelConfigAdmin(admin.ModelAdmin):
    """The model registry: seeded from saas/llm/registry.yaml, edited here."""

    list_display = ("alias", "kind", "upstream", "upstream_model", "tier", "input_price_per_mtok",
                    "output_price_per_mtok", "context_window", "enabled")  # fmt: skip
    list_filter = ("kind", "upstream", "tier", "enabled")
    list_editable = ("enabled",)
    search_fields = ("alias", "upstream_model")


@admin.register(OrgLLMSettings)
class OrgLLMSettingsAdmin(OrgOwnedAdmin):
    list_display = ("organization", "default_model", "pii_policy")


@admin.register(LLMCall)
class LLMCallAdmin(LedgerAdmin):
    """The ledger, read-only: it is what billing and audits rely on. Prompts and answers stay encrypted."""

    list_display = ("created_at", "organization", "feature", "model_requested", "model_used", "status", "cache",
                    "prompt_tokens", "completion_tokens", "cost_usd", "latency_ms")  # fmt: skip
    list_filter = ("status", "cache", "feature")
    search_fields = ("organization__name", "model_used", "feature")
    date_hierarchy = "created_at"
    fields = plain_fields(LLMCall)


@admin.register(SemanticCacheEntry)
class SemanticCacheEntryAdmin(LedgerAdmin):
    """Cached answers, by org and model (the answer itself stays encrypted); deleting expires them early."""

    list_display = ("created_at", "organization", "model_alias", "prompt_version", "scope", "expires_at")
    search_fields = ("organization__name", "model_alias")
    fields = plain_fields(SemanticCacheEntry)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True
