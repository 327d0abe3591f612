"""The OpenAI protocol, through the `openai` SDK: OpenAI itself, Azure OpenAI (its deployments and API
versions) and every OpenAI-compatible server (Ollama, vLLM, LM Studio, llama.cpp, OpenRouter, Together, Groq)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import openai

from saas.llm.providers.base import (
    BadRequest,
    ChatRequest,
    ChatResult,
    ContentFiltered,
    ContextTooLong,
    EmbeddingResult,
    LLMError,
    RateLimited,
    StreamEnd,
    Timeout,
    Upstream,
    UpstreamModel,
    UpstreamUnavailable,
    Usage,
    estimate_prompt_tokens,
    estimate_tokens,
)
from saas.llm.tool_protocol import ToolCall, new_call_id

EMBEDDING_HINTS = ("embed", "bge-", "e5-", "minilm", "nomic")

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


class OpenAIProvider:
    """Any OpenAI-compatible server (OpenAI, vLLM, Ollama, LM Studio, llama.cpp, OpenRouter, ...)."""

    label = "openai"

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        # Retries, timeouts and fallbacks are the router's: the SDK makes exactly one attempt.
        common: dict[str, Any] = {
            "api_key": upstream.api_key or "unused",
            "max_retries": 0,
            "default_headers": upstream.headers or None,
        }
        if upstream.kind == "azure_openai":
            # The model name is the Azure deployment's name.
            self.client: openai.OpenAI = openai.AzureOpenAI(
                azure_endpoint=upstream.base_url, api_version=upstream.api_version or "2024-10-21", **common
            )
        else:
            self.client = openai.OpenAI(base_url=upstream.base_url, **common)

    def list_models(self, *, timeout: float) -> list[UpstreamModel]:
        """The models the upstream offers (`GET /models`), for "Test connection"."""
        try:
            page = self.client.models.list(timeout=self.upstream.timeout_for(timeout))
            ids = sorted({model.id for model in page.data})
        except Exception as exc:
            raise _normalise(exc) from exc
        return [UpstreamModel(i, "embedding" if any(h in i.lower() for h in EMBEDDING_HINTS) else "chat") for i in ids]

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
            response = self.client.chat.completions.create(
                **self._params(model, request), timeout=self.upstream.timeout_for(timeout)
            )
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
            response = self.client.embeddings.create(
                model=model, input=texts, dimensions=dimensions, timeout=self.upstream.timeout_for(timeout)
            )
        except Exception as exc:
            raise _normalise(exc) from exc
        vectors = [item.embedding for item in sorted(response.data, key=lambda d: d.index)]
        tokens = response.usage.prompt_tokens if response.usage else sum(estimate_tokens(t) for t in texts)
        return EmbeddingResult(vectors, Usage(tokens, 0, estimated=response.usage is None))

    def stream(self, model: str, request: ChatRequest, *, timeout: float) -> Generator[str | StreamEnd, None, None]:
        """Text deltas, then one StreamEnd. Closing the generator closes the upstream connection."""
        try:
            stream = self.client.chat.completions.create(
                **self._params(model, request),
                stream=True,
                stream_options={"include_usage": True},
                timeout=self.upstream.timeout_for(timeout),
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
