"""The provider interface and the OpenAI-compatible provider.

A provider turns a ChatRequest into a ChatResult (or a stream of text deltas ending with a StreamEnd) and
raises only LLMError subclasses, so the router can decide on retries and fallbacks without knowing the SDK.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import openai

from saas.llm.tool_protocol import ToolCall, new_call_id

# --- Errors ------------------------------------------------------------------------------------------------


class LLMError(Exception):
    kind = "upstream_error"
    retryable = False
    http_status = 502

    def __init__(
        self, message: str, *, retry_after: float | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.details = details or {}


class RateLimited(LLMError):
    kind, retryable, http_status = "rate_limited", True, 429


class Timeout(LLMError):
    kind, retryable, http_status = "timeout", True, 504


class UpstreamUnavailable(LLMError):
    """5xx, connection refused or reset, a stream cut off or garbled midway."""

    kind, retryable, http_status = "upstream_unavailable", True, 502


class CircuitOpen(LLMError):
    kind, retryable, http_status = "circuit_open", True, 503


class BadRequest(LLMError):
    kind, retryable, http_status = "bad_request", False, 400


class ContentFiltered(BadRequest):
    kind, retryable, http_status = "content_filtered", False, 400


class ContextTooLong(BadRequest):
    kind, retryable, http_status = "context_too_long", False, 400


class QuotaExceeded(LLMError):
    """The org's plan allows no more AI requests this period (billing.quota)."""

    kind, retryable, http_status = "quota_exceeded", False, 402


class PaymentOverdue(LLMError):
    """The org's subscription is past due beyond its grace period (billing.quota)."""

    kind, retryable, http_status = "payment_overdue", False, 402


class Cancelled(LLMError):
    kind, retryable, http_status = "cancelled", False, 499


# --- Data --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    temperature: float | None = None
    response_format: dict[str, Any] | None = None
    # OpenAI function calling: the tools the model may call (`{"type": "function", "function": {...}}`).
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None  # "auto", "none", "required" or {"type": "function", ...}
    parallel_tool_calls: bool | None = None
    # Further OpenAI parameters, sent to an OpenAI-compatible upstream as they are (saas/llm/structured.py
    # lists them: stop, seed, logprobs, top_logprobs, user, top_p, penalties).
    options: dict[str, Any] | None = None


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False


@dataclass
class ChatResult:
    text: str
    usage: Usage
    finish_reason: str = "stop"
    tool_calls: list[ToolCall] = field(default_factory=list)
    logprobs: dict[str, Any] | None = None  # the upstream's, as it sent them (when asked for)


@dataclass
class StreamEnd:
    """The last item of a stream: usage (from the provider, or estimated), why it stopped, the tool calls."""

    usage: Usage
    finish_reason: str = "stop"
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass(frozen=True)
class Upstream:
    """Where a model lives: an OpenAI-compatible base URL and key."""

    name: str
    base_url: str
    api_key: str = field(repr=False, default="")


def estimate_tokens(text: str) -> int:
    # About four characters per token for English: used only when the provider does not report usage.
    return max(1, math.ceil(len(text) / 4)) if text else 0


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(estimate_tokens(str(m.get("content") or "") + str(m.get("tool_calls") or "")) + 4 for m in messages) + 2


# --- The OpenAI-compatible provider ------------------------------------------------------------------------


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _normalise(exc: Exception) -> LLMError:
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return Timeout("The model did not answer in time.")
    if isinstance(exc, openai.APIConnectionError):
        return UpstreamUnavailable(f"Could not reach the model provider: {exc}")
    if isinstance(exc, openai.RateLimitError):
        return RateLimited("The model provider is rate limiting us.", retry_after=_retry_after(exc))
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        code = str(body.get("code") or (body.get("error") or {}).get("code") or "")
        if exc.status_code >= 500:
            return UpstreamUnavailable(f"The model provider failed ({exc.status_code}).")
        if code == "context_length_exceeded":
            return ContextTooLong("The request is longer than the model's context window.")
        if code == "content_filter":
            return ContentFiltered("The model provider's content filter refused this request.")
        return BadRequest(f"The model provider refused the request ({exc.status_code}): {exc.message}")
    if isinstance(exc, ValueError):  # a garbled stream chunk
        return UpstreamUnavailable(f"The model provider sent a malformed response: {exc}")
    return UpstreamUnavailable(f"Unexpected provider failure: {type(exc).__name__}: {exc}")


@dataclass
class EmbeddingResult:
    vectors: list[list[float]]
    usage: Usage


class OpenAIProvider:
    """Any OpenAI-compatible server (OpenAI, vLLM, Ollama, LM Studio, llama.cpp, OpenRouter, ...)."""

    label = "openai"

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        # Retries, timeouts and fallbacks are the router's: the SDK makes exactly one attempt.
        self.client = openai.OpenAI(base_url=upstream.base_url, api_key=upstream.api_key or "unused", max_retries=0)

    def _params(self, model: str, request: ChatRequest) -> dict[str, Any]:
        params: dict[str, Any] = {"model": model, "messages": request.messages}
        if request.max_tokens is not None:
            params["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.response_format is not None:
            params["response_format"] = request.response_format
        if request.tools:
            params["tools"] = request.tools
            if request.tool_choice is not None:
                params["tool_choice"] = request.tool_choice
            if request.parallel_tool_calls is not None:
                params["parallel_tool_calls"] = request.parallel_tool_calls
        return params | (request.options or {})

    def complete(self, model: str, request: ChatRequest, *, timeout: float) -> ChatResult:
        try:
            response = self.client.chat.completions.create(**self._params(model, request), timeout=timeout)
        except Exception as exc:
            raise _normalise(exc) from exc
        choice = response.choices[0]
        text = choice.message.content or ""
        calls = [
            ToolCall(call.id or new_call_id(), call.function.name, call.function.arguments or "")
            for call in choice.message.tool_calls or []
            if call.type == "function"
        ]
        if response.usage is not None:
            usage = Usage(response.usage.prompt_tokens, response.usage.completion_tokens)
        else:
            usage = Usage(estimate_prompt_tokens(request.messages), estimate_tokens(text), estimated=True)
        logprobs = choice.logprobs.model_dump(exclude_none=True) if choice.logprobs is not None else None
        return ChatResult(text, usage, choice.finish_reason or "stop", calls, logprobs)

    def embed(self, model: str, texts: list[str], *, dimensions: int, timeout: float) -> EmbeddingResult:
        try:
            response = self.client.embeddings.create(model=model, input=texts, dimensions=dimensions, timeout=timeout)
        except Exception as exc:
            raise _normalise(exc) from exc
        vectors = [item.embedding for item in sorted(response.data, key=lambda d: d.index)]
        tokens = response.usage.prompt_tokens if response.usage else sum(estimate_tokens(t) for t in texts)
        return EmbeddingResult(vectors, Usage(tokens, 0, estimated=response.usage is None))

    def stream(self, model: str, request: ChatRequest, *, timeout: float) -> Generator[str | StreamEnd, None, None]:
        """Text deltas, then one StreamEnd. Closing the generator closes the upstream connection."""
        try:
            stream = self.client.chat.completions.create(
                **self._params(model, request), stream=True, stream_options={"include_usage": True}, timeout=timeout
            )
        except Exception as exc:
            raise _normalise(exc) from exc
        text_parts: list[str] = []
        usage: Usage | None = None
        finish: str | None = None
        calls: dict[int, dict[str, str]] = {}  # tool calls arrive in pieces, keyed by their index
        try:
            for chunk in stream:
                if chunk.usage is not None:
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        text_parts.append(choice.delta.content)
                        yield choice.delta.content
                    for piece in (choice.delta.tool_calls if choice.delta else None) or []:
                        call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                        call["id"] = piece.id or call["id"]
                        if piece.function is not None:
                            call["name"] += piece.function.name or ""
                            call["arguments"] += piece.function.arguments or ""
                    if choice.finish_reason:
                        finish = choice.finish_reason
        except GeneratorExit:
            stream.close()
            raise
        except Exception as exc:
            stream.close()
            raise _normalise(exc) from exc
        if finish is None:
            raise UpstreamUnavailable("The model provider closed the stream before it finished.")
        text = "".join(text_parts)
        yield StreamEnd(
            usage=usage or Usage(estimate_prompt_tokens(request.messages), estimate_tokens(text), estimated=True),
            finish_reason=finish,
            tool_calls=[
                ToolCall(c["id"] or new_call_id(), c["name"], c["arguments"]) for _, c in sorted(calls.items())
            ],
        )
