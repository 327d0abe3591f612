"""The gateway on the event loop: the async path of the HTTP endpoints `/v1/chat/completions` and
`/v1/embeddings` (saas/llm/asgi.py routes them here under daphne).

The same `Call` (saas/llm/call.py), the same steps and modules as `gateway.chat`, `chat_stream` and `embed`;
what changes is where each step runs:

- `admit` (synchronous, run in one hop to a worker thread with the DRF checks of saas/llm/api.py): resolve
  and validate, guardrails, PII, the caches, a quota place on a miss. An API-key memo miss does its database
  step here, and the hop gives its connection back before the model is called (no connection is held across
  an upstream call).
- the attempts run on the event loop: the breaker on asyncio Redis (saas/llm/breaker.py), the upstream over
  the provider's asyncio keep-alive pool (saas/llm/providers/openai.py); providers without one (Anthropic,
  Gemini, Azure, the local engine) run in a worker thread;
- a stream's deltas pass on the loop (no thread per open stream, no hop per chunk);
- the end (ledger row, quota settled, metrics, cache entries) on every exit: an error, a refusal, the client
  going away (the task cancelled), a store outage (503 in the one error shape). When the row goes through the
  ledger stream (LLM_LEDGER batched, the default) it runs on the loop (Call.afinish): the entry, the quota
  settle and the exact cache entry are one script on asyncio Redis, so a call makes one hop in all; when Redis
  fails there, or the row is written at once, or the semantic cache is to be written, it takes a hop.

Worker threads: the `gateway` pool of saas.core.threads (`LLM_GATEWAY_THREADS`, 16 per process), short steps
only (none waits on a model).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from saas.core import threads
from saas.core.tenancy import enter_org_scope, exit_org_scope
from saas.llm import caches, gateway, guardrails, output_screen, routing, structured
from saas.llm.call import Call, Caller
from saas.llm.gateway import (
    DEFAULT_EMBEDDING_MODEL,
    GatewayEmbeddings,
    GatewayResult,
    GatewayStreamEnd,
    _Lookup,
    _so_far,
)
from saas.llm.models import LLMCall, ModelConfig
from saas.llm.pii import StreamUnmasker
from saas.llm.prompts import ResolvedPrompt
from saas.llm.providers import ChatRequest, ChatResult, StreamEnd
from saas.llm.routing import as_llm_error, engine_label

# --- Hops to a worker thread (saas.core.threads.hop) ---------------------------------------------------


def in_org(org: Any, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` run inside the org's scope (a hop starts outside it)."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        token = enter_org_scope(org)
        try:
            return function(*args, **kwargs)
        finally:
            exit_org_scope(token)

    return run


# --- Providers on the loop -----------------------------------------------------------------------------------


async def _complete(provider: Any, model: ModelConfig, outbound: ChatRequest) -> ChatResult:
    request, timeout = routing.for_model(outbound, model), settings.LLM_ROUTER["attempt_timeout"]
    if getattr(provider, "has_async", False):
        return await structured.acomplete(provider, model.upstream_model, request, timeout=timeout)
    return await threads.hop(structured.complete, provider, model.upstream_model, request, timeout=timeout)  # type: ignore[no-any-return]


async def _stream(provider: Any, model: ModelConfig, outbound: ChatRequest) -> AsyncGenerator[Any, None]:
    request, timeout = routing.for_model(outbound, model), settings.LLM_ROUTER["attempt_timeout"]
    if getattr(provider, "has_async", False):
        async with aclosing(structured.astream(provider, model.upstream_model, request, timeout=timeout)) as items:
            async for item in items:
                yield item
        return
    # A provider without an asyncio client: its blocking stream, one hop per item (Anthropic, Gemini, local).
    blocking = structured.stream(provider, model.upstream_model, request, timeout=timeout)
    done = object()
    try:
        while (item := await threads.hop(next, blocking, done)) is not done:
            yield item
    finally:
        await asyncio.shield(threads.hop(blocking.close))


# --- Admission: the synchronous steps before the model, in one hop ----------------------------------------


@dataclass
class Pending:
    """A call admitted (validated, screened, masked, looked up in the caches, with its quota place), waiting
    for its attempts; `found.hit` set: answered from a cache already (its row is written)."""

    call: Call
    config: ModelConfig
    chain: list[ModelConfig]
    outbound: ChatRequest
    found: _Lookup


def admit(
    *, caller: Caller, model: str, request: ChatRequest, bypass_cache: bool = False, complexity: str | None = None,
    stream: bool = False, prompt: ResolvedPrompt | None = None, batched: bool = True,
) -> Pending:  # fmt: skip
    """gateway.chat's steps up to the attempts (synchronous: run it in a hop). `batched=False`: the row is
    written when the call ends, not through the ledger stream (a caller that links to it at once)."""
    call = Call(caller, requested=model or "default", stream=stream, batched=batched, prompt=prompt)
    with call.guard_exit():
        config, chain, outbound = call.prepare(model=model, request=request, complexity=complexity)
        found = gateway._look_up(call, config, outbound, bypass=bypass_cache or bool(request.tools), sources=None)
        if found.hit is None:
            call.reserve()
            call.along(chain)
    return Pending(call, config, chain, outbound, found)


# --- Chat ------------------------------------------------------------------------------------------------------


def _answered(pending: Pending, candidate: ModelConfig, result: ChatResult) -> GatewayResult:
    """The end of a successful call (in a hop): output guardrails, the row, the cache entries."""
    call = pending.call
    call.model = candidate
    output = routing.output_text(result.text, result.tool_calls)
    call.withhold(result.text, usage=result.usage, output_text=output)
    call.finish(LLMCall.Status.OK, usage=result.usage, output_text=output)
    gateway._store(pending.found, call, pending.config, candidate, result)
    text, calls = routing.reply(pending.outbound, candidate, call.masker, result.text, result.tool_calls)
    return GatewayResult(
        text, candidate.alias, result.usage, result.finish_reason, str(call.id), engine=engine_label(candidate),
        tool_calls=calls, cost_usd=call.cost_usd, logprobs=result.logprobs,
    )  # fmt: skip


def _ends_on_loop(pending: Pending) -> bool:
    """Whether the call's end can run on the loop (Call.afinish): its row goes through the ledger stream and
    nothing but the exact cache is to be kept (the semantic cache writes to the database)."""
    found = pending.found
    return pending.call.batched and settings.LLM_LEDGER["batched"] and (found.bypass or found.vector is None)


def _cache_entry(pending: Pending, result: ChatResult) -> tuple[str, str] | None:
    """gateway._store's exact entry (key, payload); None when the cache was bypassed."""
    return None if pending.found.bypass else (pending.found.key, caches.exact_payload(result))


async def _aanswered(pending: Pending, candidate: ModelConfig, result: ChatResult, run: Any) -> GatewayResult:
    """`_answered` on the loop (when _ends_on_loop): no hop, unless Redis fails under the ledger's script."""
    call = pending.call
    call.model = candidate
    output = routing.output_text(result.text, result.tool_calls)
    if call.guard.active and (blocked := call.note(guardrails.screen_output(call.guard, result.text))):
        await call.afinish(LLMCall.Status.BLOCKED, hop=run, usage=result.usage, output_text=output)
        raise guardrails.refusal(blocked)
    await call.afinish(LLMCall.Status.OK, hop=run, usage=result.usage, output_text=output,
                       cache=_cache_entry(pending, result))  # fmt: skip
    text, calls = routing.reply(pending.outbound, candidate, call.masker, result.text, result.tool_calls)
    return GatewayResult(
        text, candidate.alias, result.usage, result.finish_reason, str(call.id), engine=engine_label(candidate),
        tool_calls=calls, cost_usd=call.cost_usd, logprobs=result.logprobs,
    )  # fmt: skip


def cached_result(pending: Pending) -> GatewayResult | None:
    hit, call, config = pending.found.hit, pending.call, pending.config
    if hit is None:
        return None
    return GatewayResult(call.masker.unmask(hit.text), config.alias, hit.usage, "stop", str(call.id), cached=True,
                         engine=engine_label(config))  # fmt: skip


async def achat(pending: Pending) -> GatewayResult:
    """The attempts of an admitted call, then its end: gateway.chat from its route on."""
    if (cached := cached_result(pending)) is not None:
        return cached
    call = pending.call
    run = functools.partial(_hop_in, call.caller.org)
    async with call.aguard_exit(run):
        route = call.route
        assert route is not None
        async with aclosing(route.async_attempts()) as attempts:
            async for candidate, provider in attempts:
                try:
                    result = await _complete(provider, candidate, pending.outbound)
                except Exception as exc:  # whatever a provider raises is normalised, recorded and decided on
                    await route.afailed(candidate, as_llm_error(exc))
                    continue
                await route.asucceeded(candidate)
                if _ends_on_loop(pending):
                    return await _aanswered(pending, candidate, result, run)
                return await run(_answered, pending, candidate, result)  # type: ignore[no-any-return]
        raise route.final_error()
    raise AssertionError("unreachable")  # pragma: no cover  (aguard_exit re-raises)


async def _hop_in(org: Any, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await threads.hop(in_org(org, function), *args, **kwargs)


# --- Streams ---------------------------------------------------------------------------------------------------


def _stream_ended(
    pending: Pending, candidate: ModelConfig, unmasker: StreamUnmasker, text: str, end: StreamEnd
) -> tuple[str, GatewayStreamEnd]:
    """The end of a stream that finished (in a hop): its row and cache entries; the rest of the text held back
    for unmasking, and the end item."""
    call = pending.call
    call.model = candidate
    call.finish(LLMCall.Status.OK, usage=end.usage, output_text=routing.output_text(text, end.tool_calls))
    gateway._store(pending.found, call, pending.config, candidate, ChatResult(text, end.usage, end.finish_reason))
    return _end_item(pending, candidate, unmasker, text, end)


def _end_item(
    pending: Pending, candidate: ModelConfig, unmasker: StreamUnmasker, text: str, end: StreamEnd
) -> tuple[str, GatewayStreamEnd]:
    """After a stream's row: the rest of the text held back for unmasking, and the end item."""
    call = pending.call
    rest = unmasker.flush()
    answer, calls = routing.reply(pending.outbound, candidate, call.masker, text, end.tool_calls)
    return rest, GatewayStreamEnd(
        candidate.alias, end.usage, end.finish_reason, str(call.id), engine=engine_label(candidate),
        tool_calls=calls, cost_usd=call.cost_usd, text=answer,
    )  # fmt: skip


async def _astream_ended(
    pending: Pending, candidate: ModelConfig, unmasker: StreamUnmasker, text: str, end: StreamEnd, run: Any
) -> tuple[str, GatewayStreamEnd]:
    """`_stream_ended` on the loop (when _ends_on_loop): no hop, unless Redis fails under the ledger's script."""
    call = pending.call
    call.model = candidate
    result = ChatResult(text, end.usage, end.finish_reason)
    output = routing.output_text(text, end.tool_calls)
    await call.afinish(LLMCall.Status.OK, hop=run, usage=end.usage, output_text=output,
                       cache=_cache_entry(pending, result))  # fmt: skip
    return _end_item(pending, candidate, unmasker, text, end)


async def achat_stream(pending: Pending) -> AsyncGenerator[str | GatewayStreamEnd, None]:
    """Deltas of the answer, then one GatewayStreamEnd: gateway.chat_stream from its cache lookup on.
    Closing the iterator, or cancelling the task reading it (the client went away), closes the upstream
    connection and records the call as cancelled."""
    call, config, outbound = pending.call, pending.config, pending.outbound
    run = functools.partial(_hop_in, call.caller.org)
    async with call.aguard_exit(run):
        if (hit := pending.found.hit) is not None:
            text = call.masker.unmask(hit.text)
            yield text
            yield GatewayStreamEnd(config.alias, hit.usage, "stop", str(call.id), cached=True,
                                   engine=engine_label(config), text=text)  # fmt: skip
            return
        unmasker = StreamUnmasker(call.masker)
        parts: list[str] = []
        screen = output_screen.OutputScreen(call.guard) if call.guard.active else None  # per delta, cost ~ the delta
        route = call.route
        assert route is not None
        async with aclosing(route.async_attempts()) as attempts:
            async for candidate, provider in attempts:
                yielded = False
                upstream = _stream(provider, candidate, outbound)
                try:
                    async for item in upstream:
                        if isinstance(item, StreamEnd):
                            await route.asucceeded(candidate)
                            text = "".join(parts)
                            if _ends_on_loop(pending):
                                rest, end = await _astream_ended(pending, candidate, unmasker, text, item, run)
                            else:
                                rest, end = await run(_stream_ended, pending, candidate, unmasker, text, item)
                            if rest:
                                yield rest
                            yield end
                            return
                        call.token()
                        if screen is not None and call.note(screen.feed(item)):
                            # Stopped before this delta reaches the client; the upstream was fine, the answer not.
                            await upstream.aclose()
                            await route.asucceeded(candidate)
                            call.model = candidate
                            await run(call.withhold, screen.raw, output_text="".join(parts),
                                      usage=_so_far(outbound, candidate, parts))  # fmt: skip
                        parts.append(item)
                        visible = unmasker.feed(item)
                        yielded = True
                        if visible:
                            yield visible
                except (GeneratorExit, asyncio.CancelledError):
                    # The client went away: close the upstream connection and record the call.
                    await upstream.aclose()
                    if not call.finished:
                        call.model = candidate
                        await asyncio.shield(run(call.cancel, output_text="".join(parts),
                                                 usage=_so_far(outbound, candidate, parts)))  # fmt: skip
                    raise
                except Exception as exc:
                    if call.finished:
                        raise  # recorded already (a guardrail refusal, a ledger outage)
                    error = as_llm_error(exc)
                    await route.afailed(candidate, error)
                    if yielded or not error.retryable:
                        # Tokens already reached the client: a retry would repeat them. Stop here, honestly.
                        await run(call.finish, LLMCall.Status.ERROR, error=error, output_text="".join(parts))
                        raise error from exc
                    continue
        raise route.final_error()


# --- Embeddings ------------------------------------------------------------------------------------------------


def admit_embed(*, caller: Caller, model: str, texts: list[str], dimensions: int) -> Pending:
    """gateway.embed's steps up to the attempts (synchronous: run it in a hop)."""
    call = Call(caller, requested=model or DEFAULT_EMBEDDING_MODEL, billed=False)  # written at once, as embed does
    with call.guard_exit():
        gateway.embed_route(call, model=model, texts=texts)
    assert call.model is not None
    return Pending(call, call.model, [], ChatRequest(messages=[]), _Lookup("", True, None))


async def aembed(pending: Pending, *, texts: list[str], dimensions: int) -> GatewayEmbeddings:
    call = pending.call
    run = functools.partial(_hop_in, call.caller.org)
    timeout = settings.LLM_ROUTER["attempt_timeout"]
    async with call.aguard_exit(run):
        route = call.route
        assert route is not None
        async with aclosing(route.async_attempts()) as attempts:
            async for candidate, provider in attempts:
                try:
                    if getattr(provider, "has_async", False):
                        # a provider with has_async has aembed (saas/llm/providers/openai.py)
                        async_provider: Any = provider
                        result = await async_provider.aembed(candidate.upstream_model, texts, dimensions=dimensions,
                                                             timeout=timeout)  # fmt: skip
                    else:
                        result = await threads.hop(provider.embed, candidate.upstream_model, texts,
                                                   dimensions=dimensions, timeout=timeout)  # fmt: skip
                except Exception as exc:
                    await route.afailed(candidate, as_llm_error(exc))
                    continue
                await route.asucceeded(candidate)
                call.model = candidate
                await run(call.finish, LLMCall.Status.OK, usage=result.usage)
                return GatewayEmbeddings(result.vectors, candidate.alias, result.usage, str(call.id),
                                         engine_label(candidate))  # fmt: skip
        raise route.final_error()
    raise AssertionError("unreachable")  # pragma: no cover
