"""Which provider serves a model, for which org: the gateway asks here and nowhere else.

Operator models (ModelConfig) name an operator provider in `upstream`: an upstream of LLM_UPSTREAMS with a base
URL wins (the deployment's environment), else the `Provider` row of that name (registry.yaml, the admin), else
nothing (the model is not available here). `local` is the offline engine, always there.

An org's own providers (`OrgProvider`) bring their enabled models as `<slug>/<model id>`, usable only by that
org: their `upstream` is `org:<slug>`, resolved against the calling org's rows, so another org's provider is
never reached. Circuit breakers are per provider: an org's provider has its own, named by org and slug.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from decimal import Decimal
from threading import Lock
from typing import Any

from django.conf import settings

from billing import selectors as billing_selectors
from saas.llm import breaker
from saas.llm import config as gateway_config
from saas.llm.local_engine import ENGINE_LABEL, LocalProvider
from saas.llm.models import ModelConfig, OrgLLMSettings, OrgProvider, Provider, ProviderKind
from saas.llm.providers.anthropic import AnthropicProvider
from saas.llm.providers.base import ProviderClient, Upstream
from saas.llm.providers.gemini import GeminiProvider
from saas.llm.providers.openai import OpenAIProvider

Client = ProviderClient | LocalProvider
ORG_PREFIX = "org:"
MAX_CLIENTS = 512  # SDK clients kept (one per distinct provider configuration); the oldest go first
KEYLESS_KINDS = {ProviderKind.OPENAI_COMPATIBLE, ProviderKind.LOCAL}  # Ollama & co. often take no key
DEFAULT_BASE_URLS = {
    ProviderKind.OPENAI: "https://api.openai.com/v1",
    ProviderKind.ANTHROPIC: "https://api.anthropic.com",
    ProviderKind.GEMINI: "https://generativelanguage.googleapis.com",
}
ENGINES = {
    ProviderKind.OPENAI: "openai-compatible", ProviderKind.AZURE_OPENAI: "openai-compatible",
    ProviderKind.OPENAI_COMPATIBLE: "openai-compatible", ProviderKind.ANTHROPIC: "anthropic",
    ProviderKind.GEMINI: "gemini", ProviderKind.LOCAL: ENGINE_LABEL,
}  # fmt: skip

_clients: OrderedDict[tuple[Any, ...], Client] = OrderedDict()
_clients_lock = Lock()
_local: LocalProvider | None = None


def reset() -> None:
    """Forget the SDK clients (tests that change settings)."""
    global _local
    with _clients_lock:
        _clients.clear()
        _local = None


def client_for(upstream: Upstream) -> Client:
    """The SDK client of an upstream's protocol, kept while its configuration stays the same."""
    global _local
    if upstream.kind == ProviderKind.LOCAL:
        if _local is None:
            _local = LocalProvider()
        return _local
    key = (upstream.kind, upstream.name, upstream.base_url, upstream.api_key, upstream.api_version,
           upstream.timeout, json.dumps(upstream.headers, sort_keys=True))  # fmt: skip
    with _clients_lock:
        if key in _clients:
            _clients.move_to_end(key)
            return _clients[key]
    made: Client
    if upstream.kind == ProviderKind.ANTHROPIC:
        made = AnthropicProvider(upstream)
    elif upstream.kind == ProviderKind.GEMINI:
        made = GeminiProvider(upstream)
    else:
        made = OpenAIProvider(upstream)
    with _clients_lock:
        _clients[key] = made
        while len(_clients) > MAX_CLIENTS:
            _clients.popitem(last=False)
    return made


# --- Upstreams ----------------------------------------------------------------------------------------------


def connection_upstream(row: Provider | OrgProvider, name: str, *, key: str | None = None) -> Upstream | None:
    """A provider row as an Upstream, or None when it cannot be used (disabled, no key, no base URL)."""
    if not row.enabled:
        return None
    key = row.api_key if key is None else key
    base_url = row.base_url or DEFAULT_BASE_URLS.get(row.kind, "")  # type: ignore[call-overload]
    if row.kind == ProviderKind.LOCAL:
        return Upstream(name, "", kind=ProviderKind.LOCAL)
    if not base_url or (not key and row.kind not in KEYLESS_KINDS):
        return None
    return Upstream(name, base_url, key, kind=row.kind, headers=dict(row.headers or {}),
                    timeout=row.timeout_seconds, api_version=row.api_version)  # fmt: skip


def operator_upstream(name: str, conf: gateway_config.Snapshot | None = None) -> Upstream | None:
    if name == "local":
        return Upstream("local", "", kind=ProviderKind.LOCAL)
    configured = settings.LLM_UPSTREAMS.get(name) or {}
    if configured.get("base_url"):
        return Upstream(name, configured["base_url"], configured.get("api_key", ""),
                        kind=configured.get("kind", ProviderKind.OPENAI_COMPATIBLE))  # fmt: skip
    row = (conf or gateway_config.current()).providers.get(name)
    if row is None:
        return None
    return connection_upstream(row, name, key=row.api_key or os.environ.get(row.api_key_env or "", "") or "")


def is_org_model(model: ModelConfig) -> bool:
    return model.upstream.startswith(ORG_PREFIX)


def _org_id(org: Any) -> Any:
    return getattr(org, "pk", org)


def org_provider(org: Any, slug: str, conf: gateway_config.Snapshot | None = None) -> OrgProvider | None:
    rows = (conf or gateway_config.current()).org_providers(_org_id(org))
    return next((row for row in rows if row.slug == slug), None)


def upstream_for(model: ModelConfig, org: Any, conf: gateway_config.Snapshot | None = None) -> Upstream | None:
    if not is_org_model(model):
        return operator_upstream(model.upstream, conf)
    if org is None:
        return None  # an org's model outside any org: fail closed
    row = org_provider(org, model.upstream.removeprefix(ORG_PREFIX), conf)
    return connection_upstream(row, model.upstream) if row is not None else None


def provider_for(model: ModelConfig, org: Any, conf: gateway_config.Snapshot | None = None) -> Client | None:
    """The client that serves this model for this org, or None when none is configured here."""
    upstream = upstream_for(model, org, conf)
    return client_for(upstream) if upstream is not None else None


def breaker_key(model: ModelConfig, org: Any) -> str:
    """One circuit per provider: the operator's by name, an org's by org and slug."""
    return (
        f"{ORG_PREFIX}{_org_id(org)}:{model.upstream.removeprefix(ORG_PREFIX)}"
        if is_org_model(model)
        else model.upstream
    )


def engine_label(model: ModelConfig, org: Any = None) -> str:
    upstream = upstream_for(model, org) if org is not None or not is_org_model(model) else None
    return ENGINES.get(upstream.kind if upstream else "", "openai-compatible")  # type: ignore[call-overload]


# --- Models -------------------------------------------------------------------------------------------------


def org_model_alias(slug: str, model_id: str) -> str:
    return f"{slug}/{model_id}"


def as_model_config(row: OrgProvider, entry: dict[str, Any]) -> ModelConfig:
    """An enabled model of an org's provider as the gateway's model type (never saved)."""
    return ModelConfig(
        alias=org_model_alias(row.slug, entry["id"]),
        kind=entry.get("kind") or ModelConfig.Kind.CHAT,
        upstream=f"{ORG_PREFIX}{row.slug}",
        upstream_model=entry["id"],
        input_price_per_mtok=Decimal(str(entry.get("input_price_per_mtok") or 0)),
        output_price_per_mtok=Decimal(str(entry.get("output_price_per_mtok") or 0)),
        context_window=int(entry.get("context_window") or 8192),
        tier=entry.get("tier") or ModelConfig.Tier.SMALL,
        supports_tools=bool(entry.get("supports_tools", True)),
        supports_json=bool(entry.get("supports_json", True)),
        supports_vision=bool(entry.get("supports_vision", False)),
        fallbacks=[],
        enabled=True,
    )


def org_models(org: Any, conf: gateway_config.Snapshot | None = None, *, kind: str | None = None) -> list[ModelConfig]:
    models = [as_model_config(row, entry) for row in (conf or gateway_config.current()).org_providers(_org_id(org))
              for entry in row.enabled_models]  # fmt: skip
    return [m for m in models if kind is None or m.kind == kind]


def org_model(org: Any, alias: str, conf: gateway_config.Snapshot | None = None) -> ModelConfig | None:
    """One of the org's own models by alias (`<slug>/<model id>`), or None."""
    slug, _, model_id = alias.partition("/")
    if not model_id:
        return None
    row = org_provider(org, slug, conf)
    entry = next((e for e in row.enabled_models if e.get("id") == model_id), None) if row else None
    return as_model_config(row, entry) if row is not None and entry is not None else None


def allowed(model: ModelConfig, policy: OrgLLMSettings) -> bool:
    """Enabled, allowed by the org's admins, and (a chat model) included in the org's plan. The org's own
    models are the org admins' choice already (they enabled them on the provider) and outside the plan's list."""
    if is_org_model(model):
        return model.enabled
    return (model.enabled and (not policy.allowed_models or model.alias in policy.allowed_models)
            and (model.kind != ModelConfig.Kind.CHAT
                 or billing_selectors.plan_allows_model(org_id=policy.organization_id, alias=model.alias)))  # fmt: skip


def reachable_models(
    org: Any, *, kind: str = ModelConfig.Kind.CHAT, conf: gateway_config.Snapshot | None = None
) -> list[ModelConfig]:
    """The models this org can use now, its own first (by alias), then the operator's (by alias)."""
    conf = conf or gateway_config.current()
    policy = conf.policy(org)
    own = sorted(org_models(org, conf, kind=kind), key=lambda m: m.alias)
    operator = sorted((m for m in conf.models.values() if m.kind == kind and allowed(m, policy)
                       and operator_upstream(m.upstream, conf) is not None), key=lambda m: m.alias)  # fmt: skip
    return own + operator


# --- Health -------------------------------------------------------------------------------------------------


def provider_health(conf: gateway_config.Snapshot | None = None) -> dict[str, dict[str, Any]]:
    """Each operator provider: its kind, whether it is configured here, and its circuit (closed, open,
    half_open; "unknown" when Redis cannot say). Asks no upstream, so a probe answers at once."""
    conf = conf or gateway_config.current()
    names = sorted(set(conf.providers) | {n for n, u in settings.LLM_UPSTREAMS.items() if u.get("base_url")})
    health: dict[str, dict[str, Any]] = {}
    for name in names:
        upstream = operator_upstream(name, conf)
        row = conf.providers.get(name)
        try:
            circuit = breaker.state(name)
        except Exception:
            circuit = "unknown"
        health[name] = {"kind": upstream.kind if upstream else (row.kind if row else ""),
                        "configured": upstream is not None, "circuit": circuit}  # fmt: skip
    return health


def readiness_check() -> Any:
    """/readyz: the operator's providers, informational (an upstream outage is the router's to route around,
    not a reason to take this server out of rotation)."""
    from saas.core.health import ComponentStatus

    health = provider_health()
    configured = {name: h for name, h in health.items() if h["configured"]}
    failing = sorted(name for name, h in configured.items() if h["circuit"] not in ("closed", "unknown"))
    detail = f"{len(configured)} configured" + (f"; failing: {', '.join(failing)}" if failing else "")
    return ComponentStatus(not failing, detail, required=False, extra={"providers": health})


def org_provider_circuit(row: OrgProvider) -> str:
    try:
        return breaker.state(f"{ORG_PREFIX}{row.organization_id}:{row.slug}")
    except Exception:
        return "unknown"
