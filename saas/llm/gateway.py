"""The gateway: every AI call of Crewdesk goes through `chat`, `chat_stream` or `embed`.

Each builds one `Call` (saas/llm/call.py) and walks it through the same steps: resolve and validate
(policy.py), the caches (caches.py: exact, then semantic), a quota place only on a miss, the attempts along the
model's chain (routing.py: retries, backoff, fallbacks, the breaker), and one ledger row whatever happens
(ledger.py). Streams are retried only before their first token.

The names other apps use are here; the steps live in the modules named above.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings

from saas.llm import caches, guardrails, output_screen, policy, prompts, routing, structured, tokens
from saas.llm import config as gateway_config
from saas.llm.caches import Sources, exact_cache_prefix
from saas.llm.call import Call, Caller, CallStream, StoreUnavailable
from saas.llm.ledger import LedgerUnavailable, cost
from saas.llm.models import LLMCall, ModelConfig
from saas.llm.pii import StreamUnmasker
from saas.llm.policy import (
    MAX_MESSAGES,
    ModelNotAllowed,
    ModelNotFound,
    PersonalDataBlocked,
    check_chat_model,
    org_settings,
)
from saas.llm.prompts import ResolvedPrompt
from saas.llm.providers import BadRequest, ChatRequest, ChatResult, OpenAIProvider, StreamEnd, Usage
from saas.llm.routing import as_llm_error, available, engine_label, reset_providers
from saas.llm.tool_protocol import ToolCall

__all__ = [
    "MAX_MESSAGES", "Caller", "GatewayEmbeddings", "GatewayResult", "GatewayStreamEnd", "LedgerUnavailable",
    "ModelNotAllowed", "ModelNotFound", "OpenAIProvider", "PersonalDataBlocked", "Sources", "StoreUnavailable",
    "available", "chat", "chat_stream", "check_chat_model", "embed", "engine_label", "exact_cache_prefix",
    "org_settings", "reset_providers", "resolve_prompt", "screen_passages",
]  # fmt: skip
_allowed = policy.allowed  # the name agents/views.py and saas/llm/api.py use
OUTPUT_WINDOW = output_screen.OUTPUT_WINDOW  # characters of a streamed answer the output guardrails look at


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
    logprobs: dict[str, Any] | None = None  # the upstream's, when asked for
    # With chat(defer_records=True): the cache entries still to be written, for the caller to run once the
    # answer is on its way (an HTTP view runs it after sending the response). The ledger row is handed over
    # before chat returns, always.
    record: Callable[[], None] | None = None
    cost_usd: Decimal = Decimal(0)  # as recorded in the ledger row


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


def resolve_prompt(*, caller: Caller, key: str) -> ResolvedPrompt:
    """The system prompt version this caller uses for `key` (its org's, the operator's, or its experiment
    arm), to build the messages with and to hand to chat / chat_stream as `prompt`."""
    return prompts.prompt_resolve(
        org=caller.org, key=key, subject=prompts.subject_of(user=caller.user, api_key=caller.api_key)
    )


def screen_passages(*, caller: Caller, texts: list[str]) -> list[guardrails.Finding]:
    """The org's injection guardrail on retrieved passages, before the caller puts them into a prompt (flagged
    ones go in quoted as data; pass the findings to chat / chat_stream as `screened` for the ledger row)."""
    return policy.screen_passages(org=caller.org, texts=texts)


# --- The caches ------------------------------------------------------------------------------------------------


@dataclass
class _Lookup:
    key: str
    bypass: bool
    sources: Sources | None
    hit: caches.Hit | None = None
    vector: list[float] | None = None  # on a semantic miss: the question's embedding, to store the answer under


def _look_up(
    call: Call, config: ModelConfig, outbound: ChatRequest, *, bypass: bool, sources: Sources | None
) -> _Lookup:
    """The exact cache, then the semantic one; a hit ends the call (its row records the cost it saved)."""
    found = _Lookup(caches.exact_key(call.caller.org, config, outbound, sources, call.prompt), bypass, sources)
    if bypass:
        call.cache = LLMCall.Cache.BYPASS
        return found
    if (hit := caches.exact_get(found.key)) is not None:
        call.cache, found.hit = LLMCall.Cache.EXACT, hit
    elif sources is not None and (question := caches.semantic_question(outbound, call.masker, sources)) is not None:
        found.vector = caches.question_vector(question, sources)
        if (hit := caches.semantic_get(call.caller.org, config, sources, found.vector, call.prompt)) is not None:
            call.cache, found.hit = LLMCall.Cache.SEMANTIC, hit
    if found.hit is not None:
        call.withhold(found.hit.text, usage=found.hit.usage, output_text=found.hit.text)
        if call.stream:
            call.token()
        call.finish(LLMCall.Status.OK, usage=found.hit.usage, output_text=found.hit.text,
                    cost_saved=cost(config, found.hit.usage))  # fmt: skip
    return found


def _store(found: _Lookup, call: Call, requested: ModelConfig, answered: ModelConfig, result: ChatResult) -> None:
    """Keep a fresh answer in the caches (the semantic one only for the model asked for)."""
    if found.bypass:
        return
    caches.exact_set(found.key, result)
    if found.vector is not None and found.sources is not None and answered.pk == requested.pk:
        caches.semantic_set(call.caller.org, requested, found.sources, found.vector, result, call.prompt)


def _sources(sources: Sources | None, semantic_scope: str | None) -> Sources | None:
    if sources is None and semantic_scope is not None:
        return Sources(scope=semantic_scope)
    return sources


# --- Chat ------------------------------------------------------------------------------------------------------


def chat(
    *,
    caller: Caller,
    model: str,
    request: ChatRequest,
    bypass_cache: bool = False,
    complexity: str | None = None,
    semantic_scope: str | None = None,
    sources: Sources | None = None,
    defer_records: bool = False,
    call_id: uuid.UUID | None = None,
    screened: list[guardrails.Finding] | None = None,
    prompt: ResolvedPrompt | None = None,
) -> GatewayResult:
    """`sources` (or just `semantic_scope`, a knowledge-base version) turns on the semantic cache for
    single-turn questions. `defer_records`: an API hot path; its ledger row may go through the ledger stream,
    and the cache entries are left to `result.record()`. `call_id`: the ledger row's id, when the caller needs
    it in advance. `screened`: the guardrails' findings on what the caller put into the prompt (retrieved
    passages), for the ledger row. Requests with tools are never cached (a cached answer cannot replay tool
    calls). `prompt`: the managed system prompt version in the messages (prompts.prompt_resolve), recorded on
    the ledger row and keyed on by the caches."""
    call = Call(caller, requested=model or "default", call_id=call_id, batched=defer_records, prompt=prompt)
    call.note(screened or [])
    with call.guard_exit():
        config, chain, outbound = call.prepare(model=model, request=request, complexity=complexity)
        found = _look_up(call, config, outbound, bypass=bypass_cache or bool(request.tools),
                         sources=_sources(sources, semantic_scope))  # fmt: skip
        if found.hit is not None:
            return GatewayResult(call.masker.unmask(found.hit.text), config.alias, found.hit.usage, "stop",
                                 str(call.id), cached=True, engine=engine_label(config))  # fmt: skip
        call.reserve()
        route = call.along(chain)
        for candidate, provider in route:
            try:
                result = structured.complete(provider, candidate.upstream_model,
                                             routing.for_model(outbound, candidate),
                                             timeout=settings.LLM_ROUTER["attempt_timeout"])  # fmt: skip
            except Exception as exc:  # whatever a provider raises is normalised, recorded and decided on
                route.failed(candidate, as_llm_error(exc))
                continue
            route.succeeded(candidate)
            call.model = candidate
            output = routing.output_text(result.text, result.tool_calls)
            call.withhold(result.text, usage=result.usage, output_text=output)
            call.finish(LLMCall.Status.OK, usage=result.usage, output_text=output)

            def record(answered: ModelConfig = candidate, result: ChatResult = result) -> None:
                _store(found, call, config, answered, result)

            if not defer_records:
                record()
            text, calls = routing.reply(outbound, candidate, call.masker, result.text, result.tool_calls)
            return GatewayResult(
                text, candidate.alias, result.usage, result.finish_reason, str(call.id),
                engine=engine_label(candidate), tool_calls=calls, record=record if defer_records else None,
                cost_usd=call.cost_usd, logprobs=result.logprobs,
            )  # fmt: skip
        raise route.final_error()


def chat_stream(
    *,
    caller: Caller,
    model: str,
    request: ChatRequest,
    bypass_cache: bool = False,
    complexity: str | None = None,
    semantic_scope: str | None = None,
    sources: Sources | None = None,
    call_id: uuid.UUID | None = None,
    screened: list[guardrails.Finding] | None = None,
    defer_records: bool = False,
    prompt: ResolvedPrompt | None = None,
) -> Generator[str | GatewayStreamEnd, None, None]:
    """Deltas of the answer, then one GatewayStreamEnd. Validation errors raise before the first item;
    closing the iterator cancels the upstream call (and records the call as cancelled). An answer the output
    guardrails block ends with GuardrailBlocked before the delta that tripped them. `defer_records`: an API
    hot path, whose ledger row may go through the ledger stream."""
    call = Call(caller, requested=model or "default", stream=True, call_id=call_id, batched=defer_records,
                prompt=prompt)  # fmt: skip
    call.note(screened or [])
    with call.guard_exit():
        config, chain, outbound = call.prepare(model=model, request=request, complexity=complexity)
    items = _stream(
        call, config, chain, outbound, bypass_cache or bool(request.tools), _sources(sources, semantic_scope)
    )
    return CallStream(call, items)


def _stream(
    call: Call, config: ModelConfig, chain: list[ModelConfig], outbound: ChatRequest, bypass: bool,
    sources: Sources | None,
) -> Generator[str | GatewayStreamEnd, None, None]:  # fmt: skip
    with call.guard_exit():
        found = _look_up(call, config, outbound, bypass=bypass, sources=sources)
        if found.hit is not None:
            text = call.masker.unmask(found.hit.text)
            yield text
            yield GatewayStreamEnd(config.alias, found.hit.usage, "stop", str(call.id), cached=True,
                                   engine=engine_label(config), text=text)  # fmt: skip
            return
        call.reserve()
        unmasker = StreamUnmasker(call.masker)
        parts: list[str] = []
        screen = output_screen.OutputScreen(call.guard) if call.guard.active else None  # per delta, cost ~ the delta
        route = call.along(chain)
        for candidate, provider in route:
            yielded = False
            upstream = None
            try:
                upstream = structured.stream(provider, candidate.upstream_model,
                                             routing.for_model(outbound, candidate),
                                             timeout=settings.LLM_ROUTER["attempt_timeout"])  # fmt: skip
                for item in upstream:
                    if isinstance(item, StreamEnd):
                        route.succeeded(candidate)
                        call.model = candidate
                        text = "".join(parts)
                        call.finish(LLMCall.Status.OK, usage=item.usage,
                                    output_text=routing.output_text(text, item.tool_calls))  # fmt: skip
                        _store(found, call, config, candidate, ChatResult(text, item.usage, item.finish_reason))
                        if rest := unmasker.flush():
                            yield rest
                        answer, calls = routing.reply(outbound, candidate, call.masker, text, item.tool_calls)
                        yield GatewayStreamEnd(
                            candidate.alias, item.usage, item.finish_reason, str(call.id),
                            engine=engine_label(candidate), tool_calls=calls, cost_usd=call.cost_usd, text=answer,
                        )  # fmt: skip
                        return
                    call.token()
                    if screen is not None and call.note(screen.feed(item)):
                        # Stopped before this delta reaches the client; the upstream was fine, the answer was not.
                        upstream.close()
                        route.succeeded(candidate)
                        call.model = candidate
                        call.withhold(screen.raw, output_text="".join(parts), usage=_so_far(outbound, candidate, parts))
                    parts.append(item)
                    visible = unmasker.feed(item)
                    yielded = True
                    if visible:
                        yield visible
            except GeneratorExit:
                # The client went away or pressed stop: close the upstream connection and record it.
                if upstream is not None:
                    upstream.close()
                if not call.finished:
                    call.model = candidate
                    call.cancel(output_text="".join(parts), usage=_so_far(outbound, candidate, parts))
                raise
            except Exception as exc:
                if call.finished:
                    raise  # recorded already (a guardrail refusal, a ledger outage)
                error = as_llm_error(exc)
                route.failed(candidate, error)
                if yielded or not error.retryable:
                    # Tokens already reached the client: a retry would repeat them. Stop here, honestly.
                    call.finish(LLMCall.Status.ERROR, error=error, output_text="".join(parts))
                    raise error from exc
                continue
        raise route.final_error()


def _so_far(outbound: ChatRequest, model: ModelConfig, parts: list[str]) -> Usage:
    """The estimated usage of an answer cut short (one token per delta)."""
    return Usage(tokens.prompt_tokens(outbound.messages, model), len(parts), estimated=True)


# --- Embeddings ------------------------------------------------------------------------------------------------

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


def embed_route(call: Call, *, model: str, texts: list[str]) -> routing.Route:
    """An embedding call's checks and model, then its route (shared with the async path)."""
    policy.refuse_unstorable(model=model, input=texts)
    conf = gateway_config.current()
    settings_row = conf.policy(call.caller.org)
    config = policy.named_model(model or DEFAULT_EMBEDDING_MODEL, settings_row, ModelConfig.Kind.EMBEDDING, conf)
    call.model = config
    if not texts or len(texts) > MAX_EMBED_INPUTS:
        raise BadRequest(f"`input` must hold 1 to {MAX_EMBED_INPUTS} texts.")
    if any(not isinstance(t, str) or not t.strip() or len(t) > MAX_EMBED_CHARS for t in texts):
        raise BadRequest(f"Every input must be a non-empty string of at most {MAX_EMBED_CHARS} characters.")
    return call.along(policy.chain(config, settings_row, conf))


def embed(*, caller: Caller, model: str, texts: list[str], dimensions: int = 384) -> GatewayEmbeddings:
    """Vectors for texts, through the same registry, policy, retries, breaker and ledger as chat (embeddings
    do not count against the plan's requests)."""
    call = Call(caller, requested=model or DEFAULT_EMBEDDING_MODEL, billed=False)
    with call.guard_exit():
        route = embed_route(call, model=model, texts=texts)
        for candidate, provider in route:
            try:
                result = provider.embed(candidate.upstream_model, texts, dimensions=dimensions,
                                        timeout=settings.LLM_ROUTER["attempt_timeout"])  # fmt: skip
            except Exception as exc:  # whatever a provider raises is normalised, recorded and decided on
                route.failed(candidate, as_llm_error(exc))
                continue
            route.succeeded(candidate)
            call.model = candidate
            call.finish(LLMCall.Status.OK, usage=result.usage)
            return GatewayEmbeddings(
                result.vectors, candidate.alias, result.usage, str(call.id), engine_label(candidate)
            )
        raise route.final_error()
