"""The provider interface: its errors and data.

A provider turns a ChatRequest into a ChatResult (or a stream of text deltas ending with a StreamEnd) and
raises only LLMError subclasses, so the router can decide on retries and fallbacks without knowing the SDK.
"""

from __future__ import annotations

import json
import math
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

from saas.core.errors import ApplicationError
from saas.llm.tool_protocol import ToolCall

# --- Errors ------------------------------------------------------------------------------------------------


class LLMError(ApplicationError):
    """A gateway error: one of our ApplicationErrors (`code` is its kind, `status` its HTTP status), so the
    one DRF handler maps it like every other error (saas.core.errors)."""

    kind = "upstream_error"
    retryable = False
    http_status = 502

    def __init__(
        self, message: str, *, retry_after: float | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, code=self.kind, status=self.http_status, details=details)
        self.retry_after = retry_after


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


KINDS = ("openai", "anthropic", "azure_openai", "gemini", "openai_compatible", "local")


@dataclass(frozen=True)
class Upstream:
    """Where a model lives and how to reach it: a provider's kind, base URL, key (never in a repr or a log),
    extra headers, its own timeout (seconds; None: the router's) and, for Azure, the API version."""

    name: str
    base_url: str
    api_key: str = field(repr=False, default="")
    kind: str = "openai_compatible"
    headers: dict[str, str] = field(repr=False, default_factory=dict, hash=False, compare=False)
    timeout: float | None = None
    api_version: str = ""

    def timeout_for(self, router_timeout: float) -> float:
        return min(self.timeout, router_timeout) if self.timeout else router_timeout


@dataclass(frozen=True)
class UpstreamModel:
    """A model an upstream lists (the "Test connection" answer)."""

    id: str
    kind: str = "chat"  # or "embedding"


def estimate_tokens(text: str) -> int:
    # About four characters per token for English: used only when the provider does not report usage.
    return max(1, math.ceil(len(text) / 4)) if text else 0


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(estimate_tokens(str(m.get("content") or "") + str(m.get("tool_calls") or "")) + 4 for m in messages) + 2


@dataclass
class EmbeddingResult:
    vectors: list[list[float]]
    usage: Usage


def json_arguments(arguments: str) -> dict[str, Any]:
    """A tool call's arguments (an OpenAI JSON string) as the object other protocols want."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"_value": value}


def system_text(messages: list[dict[str, Any]]) -> str:
    """The system and developer messages of an OpenAI conversation, joined (other protocols take them apart)."""
    return "\n\n".join(str(m.get("content") or "") for m in messages if m.get("role") in ("system", "developer"))


def json_instruction(response_format: dict[str, Any] | None) -> str:
    """For a protocol without OpenAI's `response_format`: the instruction that asks for the same."""
    if not response_format or response_format.get("type") not in ("json_object", "json_schema"):
        return ""
    schema = (response_format.get("json_schema") or {}).get("schema")
    if schema:
        return "Answer with one JSON object only, valid against this JSON Schema: " + json.dumps(schema)
    return "Answer with one JSON object only."


class ProviderClient(Protocol):
    """What the router needs of a provider, whatever its protocol."""

    upstream: Upstream

    def complete(self, model: str, request: ChatRequest, *, timeout: float) -> ChatResult: ...

    def stream(self, model: str, request: ChatRequest, *, timeout: float) -> Generator[str | StreamEnd, None, None]: ...

    def embed(self, model: str, texts: list[str], *, dimensions: int, timeout: float) -> EmbeddingResult: ...

    def list_models(self, *, timeout: float) -> list[UpstreamModel]: ...
