"""The gateway: every AI call of Crewdesk goes through `chat` or `chat_stream`.

In order: resolve the model (an alias or `auto`, within what the org allows), validate the request, apply the
org's PII policy, answer from the exact cache when possible, else walk the chain (the model, then its
fallbacks): each model gets up to 1 + max_retries attempts with exponential backoff and jitter (a Retry-After
from the upstream is honoured), behind a circuit breaker per upstream. Streams are retried only before their
first token. Whatever happens, one LLMCall row records it, every attempt listed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import timedelta
from decimal import Decimal
from functools import cache
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django_guid import get_guid
from pgvector.django import CosineDistance

from billing import quota
from billing import selectors as billing_selectors
from saas.core import crypto
from saas.core.redis import get_redis
from saas.core.text import storable, unstorable
from saas.llm import breaker, guardrails, metrics, structured, tool_protocol
from saas.llm import config as gateway_config
from saas.llm.embeddings import embed_local
from saas.llm.local_engine import ENGINE_LABEL, LocalProvider
from saas.llm.models import LLMCall, ModelConfig, OrgLLMSettings, SemanticCacheEntry
from saas.llm.pii import Masker, StreamUnmasker
from saas.llm.pii import Options as PiiOptions
from saas.llm.providers import (
    BadRequest,
    Cancelled,
    ChatRequest,
    ChatResult,
    CircuitOpen,
    ContextTooLong,
    LLMError,
    OpenAIProvider,
    PaymentOverdue,
    QuotaExceeded,
    StreamEnd,
    Upstream,
    UpstreamUnavailable,
    Usage,
    estimate_prompt_tokens,
)
from saas.llm.tool_protocol import ToolCall

logger = logging.getLogger(__name__)
ROLES = {"system", "user", "assistant", "tool", "developer"}
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
Provider = OpenAIProvider | LocalProvider
MAX_MESSAGES = 500
OUTPUT_WINDOW = 600  # characters of a streamed answer the output guardrails look at after each delta


class ModelNotFound(BadRequest):
    kind = "model_not_found"


class ModelNotAllowed(BadRequest):
    kind = "model_not_allowed"


class PersonalDataBlocked(BadRequest):
    kind = "personal_data_blocked"


@dataclass(frozen=True)
class Caller:
    org: Any
    feature: str = "chat"
    user: Any = None
    api_key: Any = None
    trace_id: str = ""  # groups the ledger rows of one job (a crew run's id)

    @classmethod
    def of(cls, principal: Any, feature: str) -> Caller:
        """The caller behind an API request or a member's page: its org, and the member or key acting."""
        return cls(org=principal.organization, feature=feature, user=principal.user, api_key=principal.api_key)


@dataclass
class GatewayResult:
    text: str
    model: str
    usage: Usage
    finish_reason: str
    call_id: str
    cached: bool = False
    engine: str = "openai-compatible"
    tool_calls: list[ToolCall] = field(default_factory=list)
    logprobs: dict[str, Any] | None = None
    # With chat(defer_records=True): the ledger row and cache entries still to be written, for the caller to
    # run once the answer is on its way (an HTTP view runs it after sending the response).
    record: Callable[[], None] | None = None


@dataclass
class GatewayStreamEnd:
    model: str
    usage: Usage
    finish_reason: str
    call_id: str
    cached: bool = False
    engine: str = "openai-compatible"
    tool_calls: list[ToolCall] = field(default_factory=list)
    cost_usd: Decimal = Decimal(0)  # as recorded in the ledger row
    # The whole answer: the deltas joined, or for a model driven by the text tool protocol, the answer part
    # of its reply (the deltas showed the raw reply).
    text: str = ""


@dataclass
class _Ledger:
    """What one gateway request collects for its LLMCall row."""

    caller: Caller
    model_requested: str
    stream: bool
    started: float = field(default_factory=time.perf_counter)
    call_id: uuid.UUID = field(default_factory=uuid.uuid4)  # known before the row is written (or given)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    model: ModelConfig | None = None
    first_token_at: float | None = None
    cache: str = LLMCall.Cache.MISS
    pii_masked: int = 0
    permit: breaker.Permit | None = None  # the circuit breaker's leave for the attempt in flight
    reservation: quota.Reservation | None = None  # the org's quota place for this request, settled in write()
    guard: guardrails.Policy = field(default_factory=guardrails.Policy)
    findings: list[dict[str, Any]] = field(default_factory=list)  # the guardrails' findings, for the row

    def note(self, findings: Any) -> guardrails.Finding | None:
        """Keep the findings (each once) for the row; the first that blocks, if any."""
        for finding in findings:
            if (entry := finding.as_json()) not in self.findings:
                self.findings.append(entry)
        return guardrails.blocking(findings)

    def attempt(self, model: ModelConfig, status: str, started: float, error: LLMError | None = None) -> None:
        self.attempts.append(
            {
                "model": model.alias,
                "upstream": model.upstream,
                "status": status,
                "error": error.kind if error else None,
                "latency_ms": round((time.perf_counter() - started) * 1000),
            }
        )

    def write(
        self,
        *,
        status: str,
        usage: Usage | None = None,
        error: LLMError | None = None,
        input_text: str = "",
        output_text: str = "",
        cost_saved: Decimal = Decimal(0),
    ) -> LLMCall:
        usage = usage or Usage()
        model = self.model
        # Cache hits cost nothing; misses and bypasses were real upstream calls.
        paid = self.cache in (LLMCall.Cache.MISS, LLMCall.Cache.BYPASS)
        cost = _cost(model, usage) if model and paid and status != "error" else Decimal(0)
        latency_ms = round((time.perf_counter() - self.started) * 1000)
        ttft_ms = round((self.first_token_at - self.started) * 1000) if self.first_token_at else None
        used = [a for a in self.attempts if a["status"] == "ok"]
        call = LLMCall.objects.for_org(self.caller.org).create(
            id=self.call_id,
            organization=self.caller.org,
            user=self.caller.user,
            api_key=self.caller.api_key,
            request_id=get_guid() or "",
            trace_id=self.caller.trace_id,
            feature=self.caller.feature,
            model_requested=storable(self.model_requested),  # a refused alias may hold what text columns cannot
            model_used=model.alias if model else "",
            upstream=model.upstream if model else "",
            stream=self.stream,
            attempts=self.attempts,
            fallbacks_taken=len({a["model"] for a in self.attempts}) - 1 if self.attempts else 0,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            tokens_estimated=usage.estimated,
            cost_usd=cost,
            cost_saved_usd=cost_saved,
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            cache=self.cache,
            status=status,
            error_class=error.kind if error else "",
            pii_masked=self.pii_masked,
            guardrails=self.findings,
            input_encrypted=crypto.encrypt(input_text),
            output_encrypted=crypto.encrypt(output_text),
        )
        metrics.observe(call, model_label=used[-1]["model"] if used else (model.alias if model else "none"))
        if self.reservation is not None:
            reservation, self.reservation = self.reservation, None
            answered = status in (LLMCall.Status.OK, LLMCall.Status.CANCELLED)
            hit = self.cache in (LLMCall.Cache.EXACT, LLMCall.Cache.SEMANTIC)
            quota.settle(reservation, call=call, billable=answered and not hit, cache_hit=answered and hit)
        return call


def _cost(model: ModelConfig | None, usage: Usage) -> Decimal:
    if model is None:
        return Decimal(0)
    million = Decimal(1_000_000)
    return (
        Decimal(usage.prompt_tokens) * model.input_price_per_mtok / million
        + Decimal(usage.completion_tokens) * model.output_price_per_mtok / million
    )


# --- Resolution and validation -----------------------------------------------------------------------------


def org_settings(org: Any) -> OrgLLMSettings:
    return gateway_config.current().policy(org)


def _allowed(model: ModelConfig, policy: OrgLLMSettings) -> bool:
    """Enabled, allowed by the org's admins, and (a chat model) included in the org's plan."""
    return (model.enabled and (not policy.allowed_models or model.alias in policy.allowed_models)
            and (model.kind != ModelConfig.Kind.CHAT
                 or billing_selectors.plan_allows_model(org_id=policy.organization_id, alias=model.alias)))  # fmt: skip


def available(model: ModelConfig) -> bool:
    """Whether the model's upstream is configured here (the local engine always is)."""
    return _provider(model.upstream) is not None


def engine_label(model: ModelConfig) -> str:
    return ENGINE_LABEL if model.upstream == "local" else "openai-compatible"


def choose_auto_tier(*, request: ChatRequest, feature: str, complexity: str | None) -> str:
    rules = settings.LLM_AUTO_RULES
    if estimate_prompt_tokens(request.messages) > rules["large_if_prompt_tokens_over"]:
        return ModelConfig.Tier.LARGE
    if feature in rules["large_for_features"] or (complexity and complexity in rules["large_if_complexity"]):
        return ModelConfig.Tier.LARGE
    return ModelConfig.Tier.SMALL


def resolve_model(
    *, caller: Caller, alias: str, request: ChatRequest, complexity: str | None = None, conf: gateway_config.Snapshot
) -> tuple[ModelConfig, OrgLLMSettings]:
    policy = conf.policy(caller.org)
    if alias in ("", "default"):
        alias = policy.default_model
    if alias == "auto":
        tier = choose_auto_tier(request=request, feature=caller.feature, complexity=complexity)
        candidates = [m for m in conf.chat_models() if _allowed(m, policy) and available(m)]
        chosen = next((m for m in candidates if m.tier == tier), None) or (candidates[0] if candidates else None)
        if chosen is None:
            raise ModelNotAllowed("No model is enabled for this org.")
        return chosen, policy
    return _named_model(alias, policy, ModelConfig.Kind.CHAT, conf), policy


def _named_model(alias: str, policy: OrgLLMSettings, kind: str, conf: gateway_config.Snapshot) -> ModelConfig:
    model = conf.model(alias)
    if model is None or not model.enabled:
        raise ModelNotFound(f"The model {alias!r} does not exist.")
    if model.kind != kind:
        raise BadRequest(f"{alias!r} is a {model.kind} model; this endpoint needs a {kind} model.")
    if not _allowed(model, policy):
        in_plan = billing_selectors.plan_allows_model(org_id=policy.organization_id, alias=alias)
        raise ModelNotAllowed(
            f"The model {alias!r} is not allowed for this org."
            if in_plan
            else f"The model {alias!r} is not included in this org's plan: upgrade the plan to use it."
        )
    return model


def check_chat_model(*, org: Any, alias: str) -> None:
    """Refuse (ModelNotFound, ModelNotAllowed, UpstreamUnavailable) a chat model this org could not use now;
    `auto` and `default` always pass. For checking configurations (a crew's agents) before they run."""
    if alias in ("", "auto", "default"):
        return
    conf = gateway_config.current()
    model = _named_model(alias, conf.policy(org), ModelConfig.Kind.CHAT, conf)
    if not available(model):
        raise UpstreamUnavailable(f"The model {alias!r} has no provider configured here.")


def refuse_unstorable(**fields: Any) -> None:
    """Refuse a NUL or a lone surrogate anywhere in the request before it is looked up, sent or recorded."""
    for name, value in fields.items():
        where = unstorable(value, name)
        if where is not None:
            raise BadRequest(
                f"`{where}` holds a NUL character or an unpaired surrogate, which is not text.",
                details={"param": where.split(".")[0].split("[")[0]},
            )


def validate(request: ChatRequest, model: ModelConfig) -> None:
    if not request.messages:
        raise BadRequest("`messages` must contain at least one message.")
    if len(request.messages) > MAX_MESSAGES:
        raise BadRequest(f"At most {MAX_MESSAGES} messages per request.")
    for index, message in enumerate(request.messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise BadRequest(f"messages[{index}].role must be one of {sorted(ROLES)}.")
        calls = message.get("tool_calls")
        if calls is not None and (message["role"] != "assistant" or not isinstance(calls, list) or not all(
            isinstance(c, dict) and isinstance(c.get("id"), str) and isinstance(c.get("function"), dict) for c in calls
        )):  # fmt: skip
            raise BadRequest(f"messages[{index}].tool_calls must be a list of function calls of an assistant.")
        if not isinstance(message.get("content"), str) and not (calls and message.get("content") is None):
            raise BadRequest(f"messages[{index}].content must be a string.")
        if message["role"] == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise BadRequest(f"messages[{index}].tool_call_id must name the call this message answers.")
    for index, tool in enumerate(request.tools or []):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not TOOL_NAME.fullmatch(str(function.get("name", ""))):
            raise BadRequest(f"tools[{index}] must be a function with a name of letters, digits, _ and -.")
    if request.max_tokens is not None and request.max_tokens < 1:
        raise BadRequest("`max_tokens` must be at least 1.")
    needed = estimate_prompt_tokens(request.messages) + (request.max_tokens or 0)
    if needed > model.context_window:
        raise ContextTooLong(
            f"This request needs about {needed} tokens; {model.alias} has a context window of {model.context_window}."
        )


def _mask_message(message: dict[str, Any], masker: Masker) -> dict[str, Any]:
    """The message with its text and its tool calls' arguments masked (a caller sends back the calls it got,
    unmasked, with the values they carried)."""
    masked = {**message}
    if message.get("content"):
        masked["content"] = masker.mask(message["content"])
    if message.get("tool_calls"):
        masked["tool_calls"] = [
            {**call, "function": {**call["function"], "arguments": masker.mask(call["function"]["arguments"])}}
            if isinstance(call["function"].get("arguments"), str) else call
            for call in message["tool_calls"]
        ]  # fmt: skip
    return masked


def _mask(request: ChatRequest, policy: OrgLLMSettings, masker: Masker) -> ChatRequest:
    if policy.pii_policy == OrgLLMSettings.PiiPolicy.OFF:
        return request
    masker.options = PiiOptions.for_policy(policy)  # the org's phone regions; names if it masks them
    masked = [_mask_message(m, masker) for m in request.messages]
    if masker.found and policy.pii_policy == OrgLLMSettings.PiiPolicy.BLOCK:
        raise PersonalDataBlocked("This org does not send personal data (emails, phone numbers, ...) to models.")
    return replace(request, messages=masked)


# --- Upstreams and the exact cache -------------------------------------------------------------------------


@cache
def _provider(upstream_name: str) -> Provider | None:
    if upstream_name == "local":
        return LocalProvider()
    config = settings.LLM_UPSTREAMS.get(upstream_name)
    if not config or not config.get("base_url"):
        return None
    return OpenAIProvider(Upstream(upstream_name, config["base_url"], config.get("api_key", "")))


def reset_providers() -> None:
    _provider.cache_clear()


def _cache_key(org: Any, model: ModelConfig, request: ChatRequest, scope: str | None = None) -> str:
    material = json.dumps(
        {
            "org": str(org.pk),
            "scope": scope,  # the knowledge-base version, when the caller gives one
            "model": model.alias,
            "prompt_version": settings.LLM_PROMPT_VERSION,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "response_format": request.response_format,
            "request": structured.cache_material(request),
        },
        sort_keys=True,
    )
    return exact_cache_prefix(org.pk) + hashlib.sha256(material.encode()).hexdigest()


def exact_cache_prefix(org_id: Any) -> str:
    """The org first: erasure finds (SCAN) and deletes all of an org's entries (saas/llm/privacy.py)."""
    return f"crewdesk:llm:exact:{org_id}:"


def _cache_get(key: str) -> dict[str, Any] | None:
    try:
        raw = get_redis().get(key)
    except Exception:
        return None  # a cache outage costs a call, never the answer
    return json.loads(raw) if raw else None


def _cache_set(key: str, result: ChatResult) -> None:
    payload = {"text": result.text, "usage": [result.usage.prompt_tokens, result.usage.completion_tokens]}
    with suppress(Exception):  # a cache outage must not fail an answer we already have
        get_redis().set(key, json.dumps(payload), ex=settings.LLM_CACHE_TTL)


# --- The semantic cache -----------------------------------------------------------------------------------


def _semantic_question(request: ChatRequest, masker: Masker, scope: str | None) -> str | None:
    """The question to look up, or None when the semantic cache does not apply: only single-turn questions
    (system context allowed) in a caller-given knowledge-base scope, and never when personal data was masked
    (placeholders from one person's question must not come back in another's answer)."""
    if scope is None or masker.found:
        return None
    users = [m for m in request.messages if m["role"] == "user"]
    if len(users) != 1 or any(m["role"] not in ("system", "user") for m in request.messages):
        return None
    return users[0]["content"]


def _semantic_lookup(
    caller: Caller, model: ModelConfig, scope: str, question: str
) -> tuple[SemanticCacheEntry | None, list[float]]:
    vector = embed_local([question])[0]
    with transaction.atomic():
        with connection.cursor() as cursor:
            # pgvector 0.8: keep scanning the HNSW index until the org/model/scope filters have enough rows.
            cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        entry = (
            SemanticCacheEntry.objects.for_org(caller.org)
            .filter(
                model_alias=model.alias,
                prompt_version=settings.LLM_PROMPT_VERSION,
                scope=scope,
                expires_at__gt=timezone.now(),
            )
            .annotate(distance=CosineDistance("embedding", vector))
            .filter(distance__lte=1 - settings.LLM_SEMANTIC_THRESHOLD)
            .order_by("distance")
            .first()
        )
    return entry, vector


def _semantic_store(caller: Caller, model: ModelConfig, scope: str, vector: list[float], result: ChatResult) -> None:
    SemanticCacheEntry.objects.for_org(caller.org).create(
        organization=caller.org,
        model_alias=model.alias,
        prompt_version=settings.LLM_PROMPT_VERSION,
        scope=scope[:128],
        embedding=vector,
        answer_encrypted=crypto.encrypt(result.text),
        prompt_tokens=result.usage.prompt_tokens,
        completion_tokens=result.usage.completion_tokens,
        expires_at=timezone.now() + timedelta(seconds=settings.LLM_CACHE_TTL),
    )


# --- The chain ---------------------------------------------------------------------------------------------


def _chain(model: ModelConfig, policy: OrgLLMSettings, conf: gateway_config.Snapshot) -> list[ModelConfig]:
    chain = [model]
    for alias in model.fallbacks:
        fallback = conf.model(alias)
        if fallback is not None and _allowed(fallback, policy) and fallback not in chain:
            chain.append(fallback)
    return chain


def _backoff(attempt: int, error: LLMError) -> float | None:
    """Seconds to wait before retrying, or None to stop retrying this model (fall back instead)."""
    config = settings.LLM_ROUTER
    if error.retry_after is not None:
        return error.retry_after if error.retry_after <= config["max_retry_after"] else None
    ceiling = min(config["backoff_max"], config["backoff_base"] * (2**attempt))
    return random.uniform(0, ceiling)  # noqa: S311  (full jitter, not cryptography)


def _attempts(chain: list[ModelConfig], ledger: _Ledger) -> Iterator[tuple[ModelConfig, Provider, float]]:
    """Yield (model, provider, attempt start) for each attempt the router allows; the caller reports the
    outcome by calling `_settle`. Stops when a model has used its retries, then moves down the chain."""
    for model in chain:
        provider = _provider(model.upstream)
        if provider is None:
            ledger.attempt(model, "skipped", time.perf_counter(), UpstreamUnavailable("upstream not configured"))
            continue
        for attempt in range(settings.LLM_ROUTER["max_retries"] + 1):
            started = time.perf_counter()
            ledger.permit = breaker.allow(model.upstream)
            if ledger.permit is None:
                ledger.attempt(model, "circuit_open", started, CircuitOpen("circuit open"))
                break
            yield model, provider, started
            if ledger.attempts and ledger.attempts[-1]["status"] == "ok":
                return
            last_error = ledger.attempts[-1].get("_error") if ledger.attempts else None
            wait = _backoff(attempt, last_error) if last_error else None
            if wait is None or attempt == settings.LLM_ROUTER["max_retries"]:
                break
            time.sleep(wait)


def as_llm_error(exc: Exception) -> LLMError:
    if isinstance(exc, LLMError):
        return exc
    logger.exception("LLM provider failed unexpectedly")
    return UpstreamUnavailable(f"The model provider failed unexpectedly ({type(exc).__name__}).")


def _settle(ledger: _Ledger, model: ModelConfig, started: float, error: LLMError | None) -> None:
    if error is None:
        if ledger.permit is not None:
            breaker.record_success(ledger.permit)
        ledger.attempt(model, "ok", started)
        return
    if error.retryable:
        breaker.record_failure(model.upstream)
    ledger.attempt(model, "error", started, error)
    ledger.attempts[-1]["_error"] = error


def _for_model(request: ChatRequest, model: ModelConfig) -> ChatRequest:
    """The request as this model takes it: tools natively, or described by the text protocol."""
    if not request.tools or model.supports_tools:
        return request
    messages = tool_protocol.to_text_messages(request.messages, request.tools)
    return replace(request, messages=messages, tools=None)


def _reply(
    request: ChatRequest, model: ModelConfig, masker: Masker, text: str, calls: list[ToolCall]
) -> tuple[str, list[ToolCall]]:
    """The answer and tool calls for the caller, whichever way the model was driven, unmasked."""
    if request.tools and not model.supports_tools:
        text, calls = tool_protocol.parse(text)
    return masker.unmask(text), [ToolCall(c.id, c.name, masker.unmask(c.arguments)) for c in calls]


def _output_text(text: str, calls: list[ToolCall]) -> str:
    """What the ledger keeps of an answer: its text, and the tool calls it made."""
    if not calls:
        return text
    return "\n".join(filter(None, [text, json.dumps([c.as_message_part() for c in calls])]))


def _clean_attempts(ledger: _Ledger) -> None:
    for attempt in ledger.attempts:
        attempt.pop("_error", None)


def _final_error(ledger: _Ledger) -> LLMError:
    errors = [a for a in ledger.attempts if a["status"] != "ok"]
    if not errors:
        return UpstreamUnavailable("No model provider is configured for this model.")
    last = errors[-1]
    error = last.get("_error")
    if isinstance(error, LLMError):
        return error
    if last["status"] == "circuit_open":
        return CircuitOpen("The model provider is failing; we stopped calling it for a moment. Try again shortly.")
    return UpstreamUnavailable("No model provider is configured for this model.")


# --- Shared steps of chat and chat_stream ------------------------------------------------------------------


def _prepare(
    ledger: _Ledger, masker: Masker, *, model: str, request: ChatRequest, complexity: str | None
) -> tuple[ModelConfig, list[ModelConfig], ChatRequest]:
    """Resolve (the model and its fallback chain), validate, screen and mask; a refusal is recorded in the
    ledger before it is raised."""
    conf = gateway_config.current()
    try:
        refuse_unstorable(model=model, messages=request.messages, tools=request.tools or [])
        config, policy = resolve_model(
            caller=ledger.caller, alias=model, request=request, complexity=complexity, conf=conf
        )
        ledger.model = config
        validate(request, config)
        ledger.guard = guardrails.Policy.of(policy)
        outbound = _mask(_screen(ledger, request), policy, masker)
        ledger.pii_masked = masker.found
        try:
            ledger.reservation = quota.reserve(org=ledger.caller.org)
        except quota.QuotaExceeded as exceeded:
            raise QuotaExceeded(exceeded.message, details=exceeded.details) from None
        except quota.PaymentOverdue as overdue:
            raise PaymentOverdue(overdue.message, details=overdue.details) from None
    except LLMError as error:
        ledger.write(status=_failed(error), error=error)
        raise
    return config, _chain(config, policy, conf), outbound


def screen_passages(*, caller: Caller, texts: list[str]) -> list[guardrails.Finding]:
    """The org's injection guardrail on retrieved passages, before the caller puts them into a prompt (flagged
    ones go in quoted as data; pass the findings to chat / chat_stream as `screened` for the ledger row)."""
    guard = guardrails.Policy.of(gateway_config.current().policy(caller.org))
    return guardrails.screen_untrusted(guard, texts, target=guardrails.PASSAGE)


def _failed(error: LLMError) -> str:
    return LLMCall.Status.BLOCKED if isinstance(error, guardrails.GuardrailBlocked) else LLMCall.Status.ERROR


def _screen(ledger: _Ledger, request: ChatRequest) -> ChatRequest:
    """The guardrails on what enters the prompt: the latest user message (refused when the org blocks what
    was found), and the tool results after it, quoted as data when they look like instructions."""
    if not ledger.guard.active:
        return request
    messages = request.messages
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    question = messages[last_user].get("content") if last_user >= 0 else None
    if blocked := ledger.note(guardrails.screen_input(ledger.guard, question) if isinstance(question, str) else []):
        raise guardrails.refusal(blocked)
    tools = [i for i in range(last_user + 1, len(messages))
             if messages[i]["role"] == "tool" and isinstance(messages[i].get("content"), str)]  # fmt: skip
    flagged = guardrails.screen_untrusted(ledger.guard, [messages[i]["content"] for i in tools],
                                          target=guardrails.TOOL_RESULT)  # fmt: skip
    if not flagged:
        return request
    ledger.note(flagged)
    quoted = {tools[f.index - 1] for f in flagged if f.index}
    screened = [
        {**m, "content": guardrails.quote_as_data(m["content"], label="This tool result")} if i in quoted else m
        for i, m in enumerate(messages)
    ]
    return replace(request, messages=screened)


def _withhold(ledger: _Ledger, text: str, **record: Any) -> None:
    """Output guardrails on an answer (or a streamed answer's latest part): a blocking finding is recorded
    (the answer was paid for: the row keeps its usage) and raised instead of the answer."""
    if not ledger.guard.active:
        return
    if blocked := ledger.note(guardrails.screen_output(ledger.guard, text)):
        _clean_attempts(ledger)
        ledger.write(status=LLMCall.Status.BLOCKED, **record)
        raise guardrails.refusal(blocked)


@dataclass
class _CacheOutcome:
    hit: tuple[str, Usage, str] | None  # (answer for the user, usage, ledger call id) on a hit
    vector: list[float] | None  # on a semantic miss: the question's embedding, to store the fresh answer under


def _from_caches(
    ledger: _Ledger, config: ModelConfig, outbound: ChatRequest, masker: Masker, *, key: str, scope: str | None,
    bypass: bool,
) -> _CacheOutcome:  # fmt: skip
    """The exact cache, then the semantic one; a hit is recorded in the ledger with the cost it saved."""
    if bypass:
        ledger.cache = LLMCall.Cache.BYPASS
        return _CacheOutcome(None, None)
    input_text = json.dumps(outbound.messages)
    found: tuple[str, Usage] | None = None
    vector = None
    if (hit := _cache_get(key)) is not None:
        ledger.cache = LLMCall.Cache.EXACT
        found = (hit["text"], Usage(*hit["usage"]))
    elif scope is not None and (question := _semantic_question(outbound, masker, scope)) is not None:
        entry, vector = _semantic_lookup(ledger.caller, config, scope, question)
        if entry is not None:
            ledger.cache = LLMCall.Cache.SEMANTIC
            found = (crypto.decrypt(entry.answer_encrypted), Usage(entry.prompt_tokens, entry.completion_tokens))
    if found is None:
        return _CacheOutcome(None, vector)
    text, usage = found
    _withhold(ledger, text, usage=usage, input_text=input_text, output_text=text)
    if ledger.stream:
        ledger.first_token_at = time.perf_counter()
    call = ledger.write(
        status="ok", usage=usage, input_text=input_text, output_text=text, cost_saved=_cost(config, usage)
    )
    return _CacheOutcome((masker.unmask(text), usage, str(call.pk)), None)


# --- Entry points ------------------------------------------------------------------------------------------


def chat(
    *,
    caller: Caller,
    model: str,
    request: ChatRequest,
    bypass_cache: bool = False,
    complexity: str | None = None,
    semantic_scope: str | None = None,
    defer_records: bool = False,
    call_id: uuid.UUID | None = None,
    screened: list[guardrails.Finding] | None = None,
) -> GatewayResult:
    """`semantic_scope` (a knowledge-base version) turns on the semantic cache for single-turn questions.
    `defer_records`: on success, leave the ledger row and cache entries to `result.record()` (failures and
    cache hits are always recorded before returning). `call_id`: the ledger row's id, when the caller needs
    it in advance. `screened`: the guardrails' findings on what the caller put into the prompt (retrieved
    passages), for the ledger row. Requests with tools are never cached (a cached answer cannot replay tool
    calls)."""
    ledger = _Ledger(caller=caller, model_requested=model or "default", stream=False, call_id=call_id or uuid.uuid4())
    ledger.note(screened or [])
    masker = Masker()
    config, chain, outbound = _prepare(ledger, masker, model=model, request=request, complexity=complexity)
    input_text = json.dumps(outbound.messages)
    key = _cache_key(caller.org, config, outbound, semantic_scope)
    bypass = bypass_cache or bool(request.tools)
    cached = _from_caches(ledger, config, outbound, masker, key=key, scope=semantic_scope, bypass=bypass)
    if cached.hit is not None:
        text, usage, hit_id = cached.hit
        return GatewayResult(text, config.alias, usage, "stop", hit_id, cached=True, engine=engine_label(config))
    vector = cached.vector

    for candidate, provider, started in _attempts(chain, ledger):
        try:
            result = structured.complete(
                provider,
                candidate.upstream_model,
                _for_model(outbound, candidate),
                timeout=settings.LLM_ROUTER["attempt_timeout"],
            )
        except Exception as exc:  # whatever a provider raises is normalised, recorded and decided on
            failed = as_llm_error(exc)
            _settle(ledger, candidate, started, failed)
            if not failed.retryable:
                break
            continue
        _settle(ledger, candidate, started, None)
        ledger.model = candidate
        _clean_attempts(ledger)
        output = _output_text(result.text, result.tool_calls)
        _withhold(ledger, result.text, usage=result.usage, input_text=input_text, output_text=output)

        def record(answered: ModelConfig = candidate, result: ChatResult = result) -> None:
            output = _output_text(result.text, result.tool_calls)
            ledger.write(status="ok", usage=result.usage, input_text=input_text, output_text=output)
            if ledger.cache != LLMCall.Cache.BYPASS:
                _cache_set(key, result)
                if vector is not None and semantic_scope is not None and answered.pk == config.pk:
                    _semantic_store(caller, config, semantic_scope, vector, result)

        if not defer_records:
            record()
        text, calls = _reply(outbound, candidate, masker, result.text, result.tool_calls)
        return GatewayResult(
            text,
            candidate.alias,
            result.usage,
            result.finish_reason,
            str(ledger.call_id),
            engine=engine_label(candidate),
            tool_calls=calls,
            logprobs=result.logprobs,
            record=record if defer_records else None,
        )
    failure = _final_error(ledger)
    _clean_attempts(ledger)
    ledger.write(status="error", error=failure, input_text=input_text)
    raise failure


def chat_stream(
    *,
    caller: Caller,
    model: str,
    request: ChatRequest,
    bypass_cache: bool = False,
    complexity: str | None = None,
    semantic_scope: str | None = None,
    call_id: uuid.UUID | None = None,
    screened: list[guardrails.Finding] | None = None,
) -> Generator[str | GatewayStreamEnd, None, None]:
    """Deltas of the answer, then one GatewayStreamEnd. Validation errors raise before the first item;
    closing the iterator cancels the upstream call (and records the call as cancelled). An answer the output
    guardrails block ends with GuardrailBlocked before the delta that tripped them."""
    ledger = _Ledger(caller=caller, model_requested=model or "default", stream=True, call_id=call_id or uuid.uuid4())
    ledger.note(screened or [])
    masker = Masker()
    config, chain, outbound = _prepare(ledger, masker, model=model, request=request, complexity=complexity)
    return _stream(ledger, config, chain, outbound, masker, bypass_cache or bool(request.tools), semantic_scope)


def _stream(
    ledger: _Ledger,
    config: ModelConfig,
    chain: list[ModelConfig],
    outbound: ChatRequest,
    masker: Masker,
    bypass_cache: bool,
    semantic_scope: str | None = None,
) -> Generator[str | GatewayStreamEnd, None, None]:
    input_text = json.dumps(outbound.messages)
    key = _cache_key(ledger.caller.org, config, outbound, semantic_scope)
    cached = _from_caches(ledger, config, outbound, masker, key=key, scope=semantic_scope, bypass=bypass_cache)
    if cached.hit is not None:
        text, usage, hit_id = cached.hit
        yield text
        yield GatewayStreamEnd(config.alias, usage, "stop", hit_id, cached=True, engine=engine_label(config), text=text)
        return
    vector = cached.vector

    unmasker = StreamUnmasker(masker)
    parts: list[str] = []
    tail = ""  # the answer's latest characters, for the output guardrails
    recorded = False
    for candidate, provider, started in _attempts(chain, ledger):
        yielded = False
        upstream = None
        try:
            upstream = structured.stream(
                provider,
                candidate.upstream_model,
                _for_model(outbound, candidate),
                timeout=settings.LLM_ROUTER["attempt_timeout"],
            )
            for item in upstream:
                if isinstance(item, StreamEnd):
                    _settle(ledger, candidate, started, None)
                    ledger.model = candidate
                    _clean_attempts(ledger)
                    text = "".join(parts)
                    output = _output_text(text, item.tool_calls)
                    call = ledger.write(status="ok", usage=item.usage, input_text=input_text, output_text=output)
                    recorded = True
                    if ledger.cache != LLMCall.Cache.BYPASS:
                        result = ChatResult(text, item.usage, item.finish_reason)
                        _cache_set(key, result)
                        if vector is not None and semantic_scope is not None and candidate.pk == config.pk:
                            _semantic_store(ledger.caller, config, semantic_scope, vector, result)
                    tail = unmasker.flush()
                    if tail:
                        yield tail
                    answer, calls = _reply(outbound, candidate, masker, text, item.tool_calls)
                    yield GatewayStreamEnd(
                        candidate.alias, item.usage, item.finish_reason, str(call.pk), engine=engine_label(candidate),
                        tool_calls=calls, cost_usd=call.cost_usd, text=answer,
                    )  # fmt: skip
                    return
                if ledger.first_token_at is None:
                    ledger.first_token_at = time.perf_counter()
                tail = (tail + item)[-OUTPUT_WINDOW:]
                if ledger.guard.active and ledger.note(guardrails.screen_output(ledger.guard, tail)):
                    # Stopped before this delta reaches the client; the upstream was fine, the answer was not.
                    upstream.close()
                    _settle(ledger, candidate, started, None)
                    ledger.model, recorded = candidate, True
                    _withhold(
                        ledger,
                        tail,
                        input_text=input_text,
                        output_text="".join(parts),
                        usage=Usage(estimate_prompt_tokens(outbound.messages), len(parts), estimated=True),
                    )
                parts.append(item)
                visible = unmasker.feed(item)
                yielded = True
                if visible:
                    yield visible
        except GeneratorExit:
            # The client went away or pressed stop: close the upstream connection and record it.
            if upstream is not None:
                upstream.close()
            if recorded:
                raise  # it had finished; only the last items were not read
            ledger.attempt(candidate, "cancelled", started, Cancelled("cancelled"))
            _clean_attempts(ledger)
            ledger.model = candidate
            ledger.write(
                status=LLMCall.Status.CANCELLED,
                usage=Usage(estimate_prompt_tokens(outbound.messages), len(parts), estimated=True),
                error=Cancelled("cancelled by the client"),
                input_text=input_text,
                output_text="".join(parts),
            )
            raise
        except guardrails.GuardrailBlocked:
            raise  # recorded already
        except Exception as exc:  # whatever a provider raises is normalised, recorded and decided on
            error = as_llm_error(exc)
            _settle(ledger, candidate, started, error)
            if yielded or not error.retryable:
                # Tokens already reached the client: a retry would repeat them. Stop here, honestly.
                _clean_attempts(ledger)
                ledger.write(status="error", error=error, input_text=input_text, output_text="".join(parts))
                raise error from exc
            continue
    failure = _final_error(ledger)
    _clean_attempts(ledger)
    ledger.write(status="error", error=failure, input_text=input_text)
    raise failure


# --- Embeddings --------------------------------------------------------------------------------------------

DEFAULT_EMBEDDING_MODEL = "local-minilm"
MAX_EMBED_INPUTS = 2048
MAX_EMBED_CHARS = 32_000


@dataclass
class GatewayEmbeddings:
    vectors: list[list[float]]
    model: str
    usage: Usage
    call_id: str
    engine: str


def embed(*, caller: Caller, model: str, texts: list[str], dimensions: int = 384) -> GatewayEmbeddings:
    """Vectors for texts, through the same registry, policy, retries, breaker and ledger as chat."""
    ledger = _Ledger(caller=caller, model_requested=model or DEFAULT_EMBEDDING_MODEL, stream=False)
    try:
        refuse_unstorable(model=model, input=texts)
        conf = gateway_config.current()
        policy = conf.policy(caller.org)
        config = _named_model(model or DEFAULT_EMBEDDING_MODEL, policy, ModelConfig.Kind.EMBEDDING, conf)
        ledger.model = config
        if not texts or len(texts) > MAX_EMBED_INPUTS:
            raise BadRequest(f"`input` must hold 1 to {MAX_EMBED_INPUTS} texts.")
        if any(not isinstance(t, str) or not t.strip() or len(t) > MAX_EMBED_CHARS for t in texts):
            raise BadRequest(f"Every input must be a non-empty string of at most {MAX_EMBED_CHARS} characters.")
    except LLMError as error:
        ledger.write(status="error", error=error)
        raise
    for candidate, provider, started in _attempts(_chain(config, policy, conf), ledger):
        try:
            result = provider.embed(
                candidate.upstream_model, texts, dimensions=dimensions, timeout=settings.LLM_ROUTER["attempt_timeout"]
            )
        except Exception as exc:  # whatever a provider raises is normalised, recorded and decided on
            failed = as_llm_error(exc)
            _settle(ledger, candidate, started, failed)
            if not failed.retryable:
                break
            continue
        _settle(ledger, candidate, started, None)
        ledger.model = candidate
        _clean_attempts(ledger)
        call = ledger.write(status="ok", usage=result.usage)
        return GatewayEmbeddings(result.vectors, candidate.alias, result.usage, str(call.pk), engine_label(candidate))
    failure = _final_error(ledger)
    _clean_attempts(ledger)
    ledger.write(status="error", error=failure)
    raise failure
