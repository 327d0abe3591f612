from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from accounts.admin import AllOrgsAdmin
from saas.llm.models import LLMCall, ModelConfig, OrgLLMSettings


@admin.register(ModelConfig)
class ModelConfigAdmin(admin.ModelAdmin):
    """The model registry: seeded from saas/llm/registry.yaml, edited here."""

    list_display = ("alias", "kind", "upstream", "upstream_model", "tier", "input_price_per_mtok",
                    "output_price_per_mtok", "context_window", "enabled")  # fmt: skip
    list_filter = ("kind", "upstream", "tier", "enabled")
    list_editable = ("enabled",)
    search_fields = ("alias", "upstream_model")


@admin.register(OrgLLMSettings)
class OrgLLMSettingsAdmin(AllOrgsAdmin):
    list_display = ("organization", "default_model", "pii_policy")


@admin.register(LLMCall)
class LLMCallAdmin(AllOrgsAdmin):
    """The ledger, read-only: it is what billing and audits rely on."""

    list_display = ("created_at", "organization", "feature", "model_requested", "model_used", "status", "cache",
                    "prompt_tokens", "completion_tokens", "cost_usd", "latency_ms")  # fmt: skip
    list_filter = ("status", "cache", "feature")
    exclude = ("input_encrypted", "output_encrypted")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
