"""Where a call goes: the provider of each model, and the route along a model's chain (the model, then its
fallbacks). Each model gets up to 1 + max_retries attempts with exponential backoff and full jitter (an
upstream's Retry-After is honoured up to `max_retry_after`), behind a circuit breaker per upstream
(saas/llm/breaker.py). The breaker lives in Redis and fails open: a Redis outage logs, counts
`crewdesk_llm_store_errors_total{store="redis"}` and lets the attempt through.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncGenerator, Generator, Iterator
from dataclasses import replace
from typing import Any

from django.conf import settings

from saas.core.db import release_connections
from saas.llm import breaker, metrics, provider_registry, tool_protocol
from saas.llm.models import ModelConfig
from saas.llm.pii import Masker
from saas.llm.providers import (
    ChatRequest,
    CircuitOpen,
    LLMError,
    UpstreamUnavailable,
)
from saas.llm.tool_protocol import ToolCall

logger = logging.getLogger(__name__)
Provider = provider_registry.Client


# --- Providers -----------------------------------------------------------------------------------------------


def provider_for(model: ModelConfig, org: Any = None) -> Provider | None:
    """The client serving this model for this org (its own providers, or the operator's), or None when it is
    not configured here (saas/llm/provider_registry.py)."""
    return provider_registry.provider_for(model, org)


def reset_providers() -> None:
    provider_registry.reset()


def available(model: ModelConfig, org: Any = None) -> bool:
    """Whether the model's provider is configured here (the local engine always is)."""
    return provider_for(model, org) is not None


def engine_label(model: ModelConfig) -> str:
    return provider_registry.engine_label(model)


def as_llm_error(exc: BaseException) -> LLMError:
    if isinstance(exc, LLMError):
        return exc
    logger.exception("LLM provider failed unexpectedly", exc_info=exc)
    return UpstreamUnavailable(f"The model provider failed unexpectedly ({type(exc).__name__}).")


# --- The breaker, failing open -------------------------------------------------------------------------------


def _permit(upstream: str) -> breaker.Permit | None:
    try:
        return breaker.allow(upstream)
    except Exception:  # Redis is down: without the breaker's memory, let the attempt through
        logger.warning("Circuit breaker unavailable for %s; calling the upstream anyway", upstream, exc_info=True)
        metrics.store_error("redis", "breaker")
        return breaker.Permit(upstream, clean=True)


def _breaker_note(permit: breaker.Permit | None, upstream: str, *, ok: bool) -> None:
    try:
        if ok:
            if permit is not None:
                breaker.record_success(permit)
        else:
            breaker.record_failure(upstream)
    except Exception:
        logger.warning("Circuit breaker unavailable for %s; outcome not recorded", upstream, exc_info=True)
        metrics.store_error("redis", "breaker")


async def _apermit(upstream: str) -> breaker.Permit | None:
    try:
        return await breaker.aallow(upstream)
    except Exception:
        logger.warning("Circuit breaker unavailable for %s; calling the upstream anyway", upstream, exc_info=True)
        metrics.store_error("redis", "breaker")
        return breaker.Permit(upstream, clean=True)


async def _abreaker_note(permit: breaker.Permit | None, upstream: str, *, ok: bool) -> None:
    try:
        if ok:
            if permit is not None:
                await breaker.arecord_success(permit)
        else:
            await breaker.arecord_failure(upstream)
    except Exception:
        logger.warning("Circuit breaker unavailable for %s; outcome not recorded", upstream, exc_info=True)
        metrics.store_error("redis", "breaker")


def _next(plan: Generator[tuple[str, Any], Any, None], reply: Any) -> tuple[str, Any] | None:
    """The plan's next step, sent the reply to its previous one; None when it is over."""
    try:
        return plan.send(reply)
    except StopIteration:
        return None


def backoff(attempt: int, error: LLMError) -> float | None:
    """Seconds to wait before retrying, or None to stop retrying this model (fall back instead)."""
    config = settings.LLM_ROUTER
    if error.retry_after is not None:
        return error.retry_after if error.retry_after <= config["max_retry_after"] else None
    ceiling = min(config["backoff_max"], config["backoff_base"] * (2**attempt))
    return random.uniform(0, ceiling)  # noqa: S311  (full jitter, not cryptography)


# --- The route -----------------------------------------------------------------------------------------------


class Route:
    """The attempts of one call along its chain. Iterate it for (model, provider) pairs; report each
    attempt's outcome with `succeeded`, `failed` or `cancelled` before asking for the next."""

    def __init__(self, chain: list[ModelConfig], org: Any = None) -> None:
        self.chain = chain
        self.org = org
        self.attempts: list[dict[str, Any]] = []  # as the ledger row lists them
        self.errors: list[LLMError | None] = []  # beside each attempt
        self.answered: ModelConfig | None = None
        self._permit: breaker.Permit | None = None
        self._started = 0.0

    def _add(self, model: ModelConfig, status: str, error: LLMError | None) -> None:
        self.attempts.append(
            {
                "model": model.alias,
                "upstream": model.upstream,
                "status": status,
                "error": error.kind if error else None,
                "latency_ms": round((time.perf_counter() - self._started) * 1000),
            }
        )
        self.errors.append(error)

    def _plan(self) -> Generator[tuple[str, Any], Any, None]:
        """The route's decisions, without its waits: yields ("permit", breaker key) and is sent the permit
        back, ("wait", seconds) before a retry, and ("try", (model, provider)) for each attempt. The sync
        iteration below and `attempts()` (the async path) carry them out, each its own way."""
        router = settings.LLM_ROUTER
        for model in self.chain:
            provider = provider_for(model, self.org)
            if provider is None:
                self._started = time.perf_counter()
                self._add(model, "skipped", UpstreamUnavailable("upstream not configured"))
                continue
            for attempt in range(router["max_retries"] + 1):
                self._started = time.perf_counter()
                self._permit = yield "permit", provider_registry.breaker_key(model, self.org)
                if self._permit is None:
                    self._add(model, "circuit_open", CircuitOpen("circuit open"))
                    break
                yield "try", (model, provider)
                if self.answered is not None:
                    return
                error = self.errors[-1] if self.errors else None
                wait = backoff(attempt, error) if error is not None else None
                if wait is None or attempt == router["max_retries"] or not (error and error.retryable):
                    break
                yield "wait", wait
            if self.errors and self.errors[-1] is not None and not self.errors[-1].retryable:
                return  # a request the upstream refused: another model would refuse it too

    def __iter__(self) -> Iterator[tuple[ModelConfig, Provider]]:
        plan, reply = self._plan(), None
        while (step := _next(plan, reply)) is not None:
            kind, value = step
            reply = None
            if kind == "permit":
                reply = _permit(value)
            elif kind == "wait":
                time.sleep(value)
            else:
                release_connections()  # no pooled connection is held while the model works (saas/core/db.py)
                yield value

    async def async_attempts(self) -> AsyncGenerator[tuple[ModelConfig, Provider], None]:
        """The same route for the async path: the breaker on asyncio Redis, waits that hold no thread."""
        plan, reply = self._plan(), None
        while (step := _next(plan, reply)) is not None:
            kind, value = step
            reply = None
            if kind == "permit":
                reply = await _apermit(value)
            elif kind == "wait":
                await asyncio.sleep(value)
            else:
                yield value

    async def asucceeded(self, model: ModelConfig) -> None:
        await _abreaker_note(self._permit, provider_registry.breaker_key(model, self.org), ok=True)
        self._add(model, "ok", None)
        self.answered = model

    async def afailed(self, model: ModelConfig, error: LLMError) -> None:
        if error.retryable:
            await _abreaker_note(self._permit, provider_registry.breaker_key(model, self.org), ok=False)
        self._add(model, "error", error)

    def succeeded(self, model: ModelConfig) -> None:
        _breaker_note(self._permit, provider_registry.breaker_key(model, self.org), ok=True)
        self._add(model, "ok", None)
        self.answered = model

    def failed(self, model: ModelConfig, error: LLMError) -> None:
        if error.retryable:
            _breaker_note(self._permit, provider_registry.breaker_key(model, self.org), ok=False)
        self._add(model, "error", error)

    def cancelled(self, model: ModelConfig, error: LLMError) -> None:
        self._add(model, "cancelled", error)

    def final_error(self) -> LLMError:
        """Why the route ended without an answer: the last attempt's error."""
        failures = [(a, e) for a, e in zip(self.attempts, self.errors, strict=True) if a["status"] != "ok"]
        if not failures:
            return UpstreamUnavailable("No model provider is configured for this model.")
        attempt, error = failures[-1]
        if attempt["status"] == "circuit_open":
            return CircuitOpen("The model provider is failing; we stopped calling it for a moment. Try again shortly.")
        if attempt["status"] == "skipped" or error is None:
            return UpstreamUnavailable("No model provider is configured for this model.")
        return error


# --- The request as each model takes it, and the answer as the caller gets it ---------------------------------


def for_model(request: ChatRequest, model: ModelConfig) -> ChatRequest:
    """The request as this model takes it: tools natively, or described by the text protocol."""
    if not request.tools or model.supports_tools:
        return request
    messages = tool_protocol.to_text_messages(request.messages, request.tools)
    return replace(request, messages=messages, tools=None)


def reply(
    request: ChatRequest, model: ModelConfig, masker: Masker, text: str, calls: list[ToolCall]
) -> tuple[str, list[ToolCall]]:
    """The answer and tool calls for the caller, whichever way the model was driven, unmasked."""
    if request.tools and not model.supports_tools:
        text, calls = tool_protocol.parse(text)
    return masker.unmask(text), [ToolCall(c.id, c.name, masker.unmask(c.arguments)) for c in calls]


def output_text(text: str, calls: list[ToolCall]) -> str:
    """What the ledger keeps of an answer: its text, and the tool calls it made."""
    if not calls:
        return text
    return "\n".join(filter(None, [text, json.dumps([c.as_message_part() for c in calls])]))
