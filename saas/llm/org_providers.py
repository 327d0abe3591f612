"""An org's own providers (bring your own key): reads and writes for its admins, from the browser and the API.

A key is write-only: it is encrypted when saved and only its hint (the last four characters) is ever shown
again. Every change is audited (never with the key). A provider's base URL must point at a public address
unless the operator allows private ones (LLM_ORG_PROVIDERS_ALLOW_PRIVATE, for self-hosted Ollama and co.):
otherwise an org admin could make the server call its own internal network."""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from accounts.permissions import ADMIN
from accounts.services import Origin, audit_record
from saas.core.errors import ApplicationError, NotFound
from saas.llm import provider_registry
from saas.llm.models import OrgProvider, ProviderKind
from saas.llm.providers.base import LLMError, UpstreamModel

ORG_KINDS = [k for k in ProviderKind.values if k != ProviderKind.LOCAL]
NEEDS_BASE_URL = {ProviderKind.AZURE_OPENAI, ProviderKind.OPENAI_COMPATIBLE}
MAX_PROVIDERS, MAX_MODELS, MAX_HEADERS = 20, 100, 10
TEST_TIMEOUT = 15.0  # seconds for "Test connection"
MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]*")
HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")
MAX_ALIAS = 64  # LLMCall.model_used


def _invalid(field: str, message: str) -> ApplicationError:
    return ApplicationError(message, code="invalid", details={"fields": {field: [message]}})


# --- Reads --------------------------------------------------------------------------------------------------


def org_provider_list(*, org: Any) -> list[OrgProvider]:
    return list(OrgProvider.objects.for_org(org).order_by("name", "slug"))


def org_provider_get(*, org: Any, provider_id: Any) -> OrgProvider:
    """The org's provider, or NotFound (also for another org's provider, or an id that is not one)."""
    try:
        found = OrgProvider.objects.for_org(org).filter(pk=provider_id).first()
    except (ValueError, TypeError, ValidationError):  # not a UUID
        found = None
    if found is None:
        raise NotFound("No such provider.")
    return found


@dataclass(frozen=True)
class ProviderView:
    """What a page or the API may show of a provider: never the key, never header values."""

    id: str
    name: str
    slug: str
    kind: str
    kind_label: str
    base_url: str
    key_hint: str
    has_key: bool
    header_names: list[str]
    api_version: str
    timeout_seconds: float | None
    enabled: bool
    models: list[dict[str, Any]]
    discovered_models: list[dict[str, Any]]
    tested_at: str | None
    test_error: str
    circuit: str

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__}


def org_provider_view(row: OrgProvider) -> ProviderView:
    enabled_ids = {m["id"] for m in row.enabled_models}
    return ProviderView(
        id=str(row.pk), name=row.name, slug=row.slug, kind=row.kind, kind_label=ProviderKind(row.kind).label,
        base_url=row.base_url, key_hint=row.key_hint, has_key=bool(row.api_key_encrypted),
        header_names=sorted((row.headers or {}).keys()), api_version=row.api_version,
        timeout_seconds=row.timeout_seconds, enabled=row.enabled,
        models=[{**m, "alias": provider_registry.org_model_alias(row.slug, m["id"])} for m in row.enabled_models],
        discovered_models=[{**m, "enabled": m["id"] in enabled_ids} for m in row.discovered_models],
        tested_at=row.tested_at.isoformat() if row.tested_at else None, test_error=row.test_error,
        circuit=provider_registry.org_provider_circuit(row),
    )  # fmt: skip


# --- Validation ---------------------------------------------------------------------------------------------


def _private(host: str) -> bool:
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (socket.gaierror, UnicodeError, ValueError):
        raise _invalid("base_url", f"The host {host!r} cannot be resolved.") from None
    for address in addresses:
        ip = ipaddress.ip_address(str(address).split("%")[0])
        if not ip.is_global or ip.is_multicast:
            return True
    return False


def clean_base_url(url: str, kind: str) -> str:
    url = (url or "").strip()
    if not url:
        if kind in NEEDS_BASE_URL:
            raise _invalid("base_url", "This kind of provider needs its base URL.")
        return ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise _invalid("base_url", "Give an http(s) URL without credentials in it, e.g. https://api.example.com/v1.")
    if len(url) > 500:
        raise _invalid("base_url", "At most 500 characters.")
    if not settings.LLM_ORG_PROVIDERS_ALLOW_PRIVATE and _private(parts.hostname):
        raise _invalid("base_url", "This server does not call private or local network addresses for teams.")
    return url.rstrip("/")


def _clean_headers(headers: Any) -> dict[str, str]:
    if headers in (None, ""):
        return {}
    if not isinstance(headers, dict) or len(headers) > MAX_HEADERS:
        raise _invalid("headers", f"Give at most {MAX_HEADERS} headers as names and values.")
    cleaned = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not HEADER_NAME.fullmatch(name) or not isinstance(value, str):
            raise _invalid("headers", "Header names are letters, digits and dashes; values are text.")
        if len(value) > 2000 or any(c in value for c in "\r\n\0"):
            raise _invalid("headers", "A header value is one line of at most 2000 characters.")
        cleaned[name] = value
    return cleaned


def _clean_timeout(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise _invalid("timeout_seconds", "A number of seconds.") from None
    if not 1 <= seconds <= 600:
        raise _invalid("timeout_seconds", "Between 1 and 600 seconds.")
    return seconds


def _clean_key(value: Any) -> str:
    key = value.strip() if isinstance(value, str) else ""
    if len(key) > 4000 or any(not c.isprintable() or c.isspace() for c in key):
        raise _invalid("api_key", "A key is one word of printable characters.")
    return key


def _clean_name(value: Any) -> str:
    name = " ".join(value.split()) if isinstance(value, str) else ""
    if not 1 <= len(name) <= 60:
        raise _invalid("name", "A name of 1 to 60 characters.")
    return name


def _unique_slug(org: Any, name: str, exclude: Any = None) -> str:
    base = (slugify(name) or "provider")[:20].strip("-") or "provider"
    taken = set(OrgProvider.objects.for_org(org).exclude(pk=exclude).values_list("slug", flat=True))
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base[:20]}-{n}", n + 1
    return slug


def scrub(text: str, row: OrgProvider) -> str:
    """An upstream's error message without the key (some upstreams echo what they were sent)."""
    key = row.api_key
    if key and len(key) >= 4:
        text = text.replace(key, row.key_hint or "…")
    for value in (row.headers or {}).values():
        if len(value) >= 4:
            text = text.replace(value, "…")
    return text[:300]


# --- Writes -------------------------------------------------------------------------------------------------


def _audit(principal: Any, action: str, row: OrgProvider, origin: Origin | None, **metadata: Any) -> None:
    audit_record(org=principal.organization, action=action, principal=principal, target=row,
                 target_label=row.name, origin=origin,
                 metadata={"kind": row.kind, "slug": row.slug, **metadata})  # fmt: skip


@transaction.atomic
def org_provider_create(*, principal: Any, data: dict[str, Any], origin: Origin | None = None) -> OrgProvider:
    principal.require(ADMIN)
    org = principal.organization
    kind = data.get("kind")
    if kind not in ORG_KINDS:
        raise _invalid("kind", f"One of: {', '.join(ORG_KINDS)}.")
    if OrgProvider.objects.for_org(org).count() >= MAX_PROVIDERS:
        raise ApplicationError(f"A team has at most {MAX_PROVIDERS} providers.", code="limit_reached")
    name = _clean_name(data.get("name"))
    key = _clean_key(data.get("api_key"))
    if not key and kind not in provider_registry.KEYLESS_KINDS:
        raise _invalid("api_key", "This kind of provider needs an API key.")
    row = OrgProvider(organization=org, name=name, slug=_unique_slug(org, name), kind=kind,
                      base_url=clean_base_url(data.get("base_url") or "", kind),
                      api_version=str(data.get("api_version") or "")[:32],
                      timeout_seconds=_clean_timeout(data.get("timeout_seconds")))  # fmt: skip
    row.set_key(key)
    row.headers = _clean_headers(data.get("headers"))
    row.save()
    _audit(principal, "llm.provider_created", row, origin, base_url=row.base_url)
    return row


@transaction.atomic
def org_provider_update(
    *, principal: Any, provider_id: Any, data: dict[str, Any], origin: Origin | None = None
) -> OrgProvider:
    """Change what `data` holds; an empty or missing `api_key` keeps the saved key (it is never shown, so a
    form cannot send it back)."""
    principal.require(ADMIN)
    org_provider_get(org=principal.organization, provider_id=provider_id)
    row = OrgProvider.objects.for_org(principal.organization).select_for_update().get(pk=provider_id)
    changed: list[str] = []

    def change(field: str, value: Any) -> None:
        if getattr(row, field) != value:
            setattr(row, field, value)
            changed.append(field)

    if "name" in data:
        change("name", _clean_name(data["name"]))
    if "base_url" in data:
        change("base_url", clean_base_url(data["base_url"] or "", row.kind))
    if "api_version" in data:
        change("api_version", str(data["api_version"] or "")[:32])
    if "timeout_seconds" in data:
        change("timeout_seconds", _clean_timeout(data["timeout_seconds"]))
    if "enabled" in data:
        change("enabled", bool(data["enabled"]))
    if (key := _clean_key(data.get("api_key"))) and key != row.api_key:
        row.set_key(key)
        changed += ["api_key_encrypted", "key_hint"]
    if "headers" in data and data["headers"] is not None:
        headers = _clean_headers(data["headers"])
        if headers != (row.headers or {}):
            row.headers = headers
            changed.append("headers_encrypted")
    if changed:
        row.save(update_fields=[*changed, "updated_at"])
        shown = sorted({f.removesuffix("_encrypted").replace("key_hint", "api_key") for f in changed})
        _audit(principal, "llm.provider_updated", row, origin, changed=shown)
    return row


@transaction.atomic
def org_provider_delete(*, principal: Any, provider_id: Any, origin: Origin | None = None) -> None:
    principal.require(ADMIN)
    row = org_provider_get(org=principal.organization, provider_id=provider_id)
    _audit(principal, "llm.provider_deleted", row, origin, models=[m["id"] for m in row.enabled_models])
    row.delete()


def org_provider_test(*, principal: Any, provider_id: Any) -> list[UpstreamModel]:
    """Ask the upstream for its models with the saved key: the list is kept for choosing models. A failure
    is kept too (shown on the page) and raised, in the upstream's words without the key."""
    principal.require(ADMIN)
    row = org_provider_get(org=principal.organization, provider_id=provider_id)
    if row.base_url:
        clean_base_url(row.base_url, row.kind)  # the address may resolve elsewhere now
    upstream = provider_registry.connection_upstream(row, f"{provider_registry.ORG_PREFIX}{row.slug}")
    if upstream is None:
        raise ApplicationError("This provider is disabled or has no key.", code="provider_not_ready")
    client = provider_registry.client_for(upstream)
    try:
        found = client.list_models(timeout=TEST_TIMEOUT)  # type: ignore[union-attr]
        error = ""
    except LLMError as failure:
        found, error = [], scrub(failure.message, row)
    row.discovered_models = [{"id": m.id, "kind": m.kind} for m in found[:500]]
    row.tested_at = timezone.now()
    row.test_error = error
    OrgProvider.objects.for_org(row.organization_id).filter(pk=row.pk).update(
        discovered_models=row.discovered_models, tested_at=row.tested_at, test_error=error
    )  # a test changes no setting: no audit row, and no reload of the gateway's configuration
    if error:
        raise ApplicationError(f"The connection test failed: {error}", code="provider_test_failed", status=502)
    return found


def _model_entry(model_id: Any, known: dict[str, dict[str, Any]], slug: str, options: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(model_id, str) or not MODEL_ID.fullmatch(model_id.strip()):
        raise _invalid("models", "A model id is letters, digits and . _ : @ / + - (as the provider names it).")
    model_id = model_id.strip()
    if len(provider_registry.org_model_alias(slug, model_id)) > MAX_ALIAS:
        raise _invalid(
            "models", f"{model_id[:40]}…: the provider's name and the model id make more than 64 characters."
        )
    entry: dict[str, Any] = {"id": model_id, "kind": known.get(model_id, {}).get("kind", "chat")}
    for flag in ("supports_tools", "supports_json", "supports_vision"):
        if isinstance(options.get(flag), bool):
            entry[flag] = options[flag]
    if options.get("context_window") is not None:
        try:
            window = int(options["context_window"])
        except (TypeError, ValueError):
            window = 0
        if not 1024 <= window <= 10_000_000:
            raise _invalid("models", "A context window between 1024 and 10,000,000 tokens.")
        entry["context_window"] = window
    else:
        entry["context_window"] = 128_000
    return entry


@transaction.atomic
def org_provider_set_models(
    *, principal: Any, provider_id: Any, models: list[Any], origin: Origin | None = None
) -> OrgProvider:
    """The models of this provider the org uses: ids (as the connection test listed them, or typed in for
    upstreams that list none, such as Azure deployments), or {"id", "context_window", "supports_tools", ...}."""
    principal.require(ADMIN)
    org_provider_get(org=principal.organization, provider_id=provider_id)
    row = OrgProvider.objects.for_org(principal.organization).select_for_update().get(pk=provider_id)
    if not isinstance(models, list) or len(models) > MAX_MODELS:
        raise _invalid("models", f"Give a list of at most {MAX_MODELS} models.")
    known = {m["id"]: m for m in row.discovered_models}
    entries: dict[str, dict[str, Any]] = {}
    for item in models:
        model_id, options = (item.get("id"), item) if isinstance(item, dict) else (item, {})
        entry = _model_entry(model_id, known, row.slug, options)
        entries.setdefault(entry["id"], entry)
    chosen = list(entries.values())
    if chosen != row.enabled_models:
        before = [m["id"] for m in row.enabled_models]
        row.enabled_models = chosen
        row.save(update_fields=["enabled_models", "updated_at"])
        _audit(principal, "llm.provider_models_changed", row, origin, before=before, after=list(entries))
    return row
