"""The gateway's share of exports and erasure (saas/core/privacy.py): the ledger (one row per AI request, with the
masked prompt and answer encrypted), the caches (exact answers in Redis, semantic answers in pgvector) and the
org's AI settings.

A person's ledger rows stay for billing and security, pseudonymised: no user, no prompt, no answer. Cache
entries are shared by an org and cannot be traced to who asked, so erasing a member clears their orgs' caches
(it costs a few repeated calls, never an answer)."""

from typing import Any

from django.conf import settings
from django.db import transaction

from saas.core import crypto
from saas.core.privacy import ExportSink, Store, Subject
from saas.core.redis import delete_matching
from saas.llm import ledger
from saas.llm.gateway import exact_cache_prefix
from saas.llm.models import LLMCall, OrgLLMSettings, OrgProvider, SemanticCacheEntry, Span, Trace


def _duration(seconds: int) -> str:
    return f"{seconds // 3600} hours" if seconds % 3600 == 0 and seconds >= 7200 else f"{seconds // 60} minutes"


def _call_json(call: LLMCall) -> dict[str, Any]:
    return {
        "id": str(call.pk), "created_at": call.created_at.isoformat(), "feature": call.feature,
        "model_requested": call.model_requested, "model_used": call.model_used, "status": call.status,
        "cache": call.cache, "prompt_tokens": call.prompt_tokens, "completion_tokens": call.completion_tokens,
        "cost_usd": f"{call.cost_usd:f}", "latency_ms": call.latency_ms, "pii_masked": call.pii_masked,
        "input": crypto.decrypt(call.input_encrypted), "output": crypto.decrypt(call.output_encrypted),
    }  # fmt: skip


def export_user(*, sink: ExportSink, user_id: Any, org_id: Any, folder: str) -> None:
    calls = LLMCall.objects.for_org(org_id).filter(user_id=user_id).order_by("created_at")
    sink.json(f"{folder}/ai_requests.json", [_call_json(call) for call in calls.iterator(chunk_size=500)])


def export_org(*, sink: ExportSink, org_id: Any, folder: str) -> None:
    calls = LLMCall.objects.for_org(org_id).order_by("created_at")
    sink.json(f"{folder}/ai_requests.json", [_call_json(call) for call in calls.iterator(chunk_size=500)])
    settings_row = OrgLLMSettings.objects.for_org(org_id).first()
    if settings_row is not None:
        sink.json(f"{folder}/ai_settings.json", {
            "allowed_models": settings_row.allowed_models, "default_model": settings_row.default_model,
            "pii_policy": settings_row.pii_policy,
        })  # fmt: skip


def ledger_erase_user(*, subject: Subject, batch_size: int) -> int:
    ledger.catch_up()  # their calls' rows still in the ledger stream are written first, then pseudonymised
    with transaction.atomic():
        theirs = LLMCall.objects.for_org(subject.org_id).filter(user_id=subject.user_id)
        batch = list(theirs.values_list("pk", flat=True)[:batch_size])
        return (
            LLMCall.objects.for_org(subject.org_id)
            .filter(pk__in=batch)
            .update(user=None, input_encrypted="", output_encrypted="")
        )


def ledger_erase_org(*, org_id: Any, batch_size: int) -> int:
    with transaction.atomic():
        settings_rows = OrgLLMSettings.objects.for_org(org_id).delete()[0]
        batch = list(LLMCall.objects.for_org(org_id).values_list("pk", flat=True)[:batch_size])
        return settings_rows + LLMCall.objects.for_org(org_id).filter(pk__in=batch).delete()[0]


def cache_erase_org(*, org_id: Any, batch_size: int) -> int:
    batch = list(SemanticCacheEntry.objects.for_org(org_id).values_list("pk", flat=True)[:batch_size])
    if batch:
        return SemanticCacheEntry.objects.for_org(org_id).filter(pk__in=batch).delete()[0]
    return delete_matching(exact_cache_prefix(org_id) + "*", limit=batch_size)


def cache_erase_user(*, subject: Subject, batch_size: int) -> int:
    return cache_erase_org(org_id=subject.org_id, batch_size=batch_size)


LEDGER = Store(
    name="ledger",
    title="AI request ledger",
    what="One row per AI request: who asked (member or API key), model, tokens, cost, latency, and the prompt "
    "and answer with personal data masked as the team's policy says",
    where="PostgreSQL (prompt and answer encrypted at rest)",
    kept="Rows for as long as the team exists (they are the bill); prompts and answers as long as the team's "
    "ledger retention says",
    retention_setting="retain_ledger_content_days",
    export_user=export_user,
    export_org=export_org,
    erase_user=ledger_erase_user,
    erase_org=ledger_erase_org,
)

CACHE = Store(
    name="cache",
    title="Answer caches",
    what="Answers kept to serve the same question again: exact (by the request's hash) and semantic (by meaning, "
    "single-turn questions without personal data)",
    where="Redis (exact) and PostgreSQL with pgvector (semantic, answers encrypted at rest)",
    kept=lambda: (
        f"{_duration(settings.LLM_CACHE_TTL)} from the answer; cleared at once when a member or the team is erased"
    ),
    erase_user=cache_erase_user,
    erase_org=cache_erase_org,
)


def providers_export_org(*, sink: ExportSink, org_id: Any, folder: str) -> None:
    """The team's own providers as configured, without their keys or header values (credentials are never
    exported: whoever holds the export could use them)."""
    rows = OrgProvider.objects.for_org(org_id).order_by("created_at")
    sink.json(f"{folder}/ai_providers.json", [{
        "name": row.name, "slug": row.slug, "kind": row.kind, "base_url": row.base_url,
        "api_version": row.api_version, "timeout_seconds": row.timeout_seconds, "enabled": row.enabled,
        "header_names": sorted((row.headers or {}).keys()), "models": row.enabled_models,
        "created_at": row.created_at.isoformat(),
    } for row in rows])  # fmt: skip


def providers_erase_org(*, org_id: Any, batch_size: int) -> int:
    with transaction.atomic():
        batch = list(OrgProvider.objects.for_org(org_id).values_list("pk", flat=True)[:batch_size])
        return OrgProvider.objects.for_org(org_id).filter(pk__in=batch).delete()[0]


PROVIDERS = Store(
    name="ai_providers",
    title="The team's own AI providers",
    what="Providers a team admin connected (bring your own key): name, kind, address, the chosen models, and "
    "the key and extra headers",
    where="PostgreSQL (key and headers encrypted at rest; exports leave them out)",
    kept="Until an admin deletes the provider, or the team is erased",
    export_org=providers_export_org,
    erase_org=providers_erase_org,
)


def models_notice() -> str:
    from urllib.parse import urlsplit

    from saas.llm import provider_registry

    configured = [(name, provider_registry.operator_upstream(name)) for name in provider_registry.provider_health()]
    upstreams = [f"{name} ({urlsplit(u.base_url).hostname})" for name, u in configured
                 if u is not None and u.kind != "local"]  # fmt: skip
    if not upstreams:
        where = "No outside AI provider is configured: every answer comes from the local engine on this server."
    else:
        where = f"Prompts go to the AI providers this server is configured with: {', '.join(upstreams)}."
    return (
        f"{where} A team's admins may also connect the team's own providers (with the team's own keys): "
        "that team's prompts then go to the provider it chose. Before a prompt leaves, email addresses, phone "
        "numbers, card numbers, IBANs and IP addresses are "
        'replaced by placeholders and put back in the answer you see (policy "Mask", the default). A team admin '
        'can choose "Block" (such requests are refused) or "Off" on the team\'s settings page.'
    )


# --- Traces (saas/llm/tracing.py): ids, timings, tokens and costs; no prompt, answer or passage text ------------


def _trace_json(trace: Trace) -> dict[str, Any]:
    spans = Span.objects.for_org(trace.organization_id).filter(trace=trace).order_by("seq")
    return {
        "id": str(trace.pk), "kind": trace.kind, "name": trace.name, "started_at": trace.started_at.isoformat(),
        "status": trace.status, "duration_ms": trace.duration_ms, "llm_calls": trace.llm_calls,
        "prompt_tokens": trace.prompt_tokens, "completion_tokens": trace.completion_tokens,
        "cost_usd": f"{trace.cost_usd:f}",
        "spans": [{"kind": s.kind, "name": s.name, "start_ms": s.start_ms, "end_ms": s.end_ms, "status": s.status,
                   "llm_call_id": str(s.llm_call_id) if s.llm_call_id else None} for s in spans],
    }  # fmt: skip


def traces_export_user(*, sink: ExportSink, user_id: Any, org_id: Any, folder: str) -> None:
    traces = Trace.objects.for_org(org_id).filter(user_id=user_id).order_by("started_at")
    sink.json(f"{folder}/traces.json", [_trace_json(t) for t in traces.iterator(chunk_size=200)])


def traces_export_org(*, sink: ExportSink, org_id: Any, folder: str) -> None:
    traces = Trace.objects.for_org(org_id).order_by("started_at")
    sink.json(f"{folder}/traces.json", [_trace_json(t) for t in traces.iterator(chunk_size=200)])


def traces_erase_user(*, subject: Subject, batch_size: int) -> int:
    """A person's traces stay, like their ledger rows, without their name."""
    with transaction.atomic():
        batch = list(Trace.objects.for_org(subject.org_id).filter(user_id=subject.user_id)
                     .values_list("pk", flat=True)[:batch_size])  # fmt: skip
        return Trace.objects.for_org(subject.org_id).filter(pk__in=batch).update(user=None)


def traces_erase_org(*, org_id: Any, batch_size: int) -> int:
    with transaction.atomic():
        batch = list(Trace.objects.for_org(org_id).values_list("pk", flat=True)[:batch_size])
        Span.objects.for_org(org_id).filter(trace_id__in=batch).delete()
        return Trace.objects.for_org(org_id).filter(pk__in=batch).delete()[0]


TRACES = Store(
    name="traces",
    title="Traces",
    what="One trace per ask, chat turn, generate call and crew run: who asked (member or API key), its steps with "
    "their timings, the models, tokens and costs of its AI requests, and the ids and scores of the passages "
    "retrieved (no question, answer or passage text)",
    where="PostgreSQL",
    kept="As long as the ledger's prompts and answers (the team's ledger retention); without the person's name "
    "once they are erased",
    retention_setting="retain_ledger_content_days",
    export_user=traces_export_user,
    export_org=traces_export_org,
    erase_user=traces_erase_user,
    erase_org=traces_erase_org,
)
