"""Anthropic's Messages API, through the `anthropic` SDK: an OpenAI-shaped request in, Anthropic's shape on the
wire (system apart, content blocks, `tool_use` / `tool_result`), an OpenAI-shaped answer out. Streams read the
raw SSE events (message_start, content_block_start / delta / stop, message_delta, message_stop)."""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

import anthropic

from saas.llm.providers.base import (
    BadRequest,
    ChatRequest,
    ChatResult,
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
    json_arguments,
    json_instruction,
    system_text,
)
from saas.llm.tool_protocol import ToolCall, new_call_id

DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; this is what a request without one gets
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
          "refusal": "content_filter", "pause_turn": "stop"}  # fmt: skip


def _normalise(exc: Exception) -> LLMError:
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, anthropic.APITimeoutError):
        return Timeout("The model did not answer in time.")
    if isinstance(exc, anthropic.APIConnectionError):
        return UpstreamUnavailable("Could not reach the model provider (Anthropic).")
    if isinstance(exc, anthropic.APIStatusError):
        retry_after = exc.response.headers.get("retry-after") if exc.response is not None else None
        try:
            wait = float(retry_after) if retry_after is not None else None
        except ValueError:
            wait = None
        body = exc.body if isinstance(exc.body, dict) else {}
        message = str((body.get("error") or {}).get("message") or exc.message)
        if exc.status_code == 429:
            return RateLimited("The model provider is rate limiting us.", retry_after=wait)
        if exc.status_code >= 500 or exc.status_code == 529:  # 529: Anthropic is overloaded
            return UpstreamUnavailable(f"The model provider failed ({exc.status_code}).")
        if "prompt is too long" in message.lower():
            return ContextTooLong("The request is longer than the model's context window.")
        return BadRequest(f"The model provider refused the request ({exc.status_code}): {message}")
    if isinstance(exc, ValueError):
        return UpstreamUnavailable(f"The model provider sent a malformed response: {exc}")
    return UpstreamUnavailable(f"Unexpected provider failure: {type(exc).__name__}")


def _content(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if message["role"] == "tool":
        return [{"type": "tool_result", "tool_use_id": message.get("tool_call_id", ""),
                 "content": str(message.get("content") or "")}]  # fmt: skip
    if message.get("content"):
        blocks.append({"type": "text", "text": str(message["content"])})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        blocks.append({"type": "tool_use", "id": call.get("id") or new_call_id(), "name": function.get("name", ""),
                       "input": json_arguments(function.get("arguments") or "")})  # fmt: skip
    return blocks


def to_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI chat messages as Anthropic's: tool results are user turns, and turns of one role are merged."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.get("role") in ("system", "developer"):
            continue
        role = "assistant" if message["role"] == "assistant" else "user"
        blocks = _content(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return turns


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice in (None, "auto"):
        return None
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"type": "tool", "name": choice["function"].get("name", "")}
    return None


class AnthropicProvider:
    label = "anthropic"

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        # Retries, timeouts and fallbacks are the router's: the SDK makes exactly one attempt.
        self.client = anthropic.Anthropic(
            api_key=upstream.api_key or "unused",
            base_url=upstream.base_url or None,
            max_retries=0,
            default_headers=upstream.headers or None,
        )

    def _params(self, model: str, request: ChatRequest) -> dict[str, Any]:
        system = "\n\n".join(filter(None, [system_text(request.messages), json_instruction(request.response_format)]))
        params: dict[str, Any] = {
            "model": model,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": to_messages(request.messages),
        }
        if system:
            params["system"] = system
        if request.temperature is not None:
            params["temperature"] = min(request.temperature, 1.0)  # Anthropic's range is 0 to 1
        if request.tools:
            params["tools"] = [
                {"name": f["name"], "description": f.get("description") or "",
                 "input_schema": f.get("parameters") or {"type": "object", "properties": {}}}
                for f in (t["function"] for t in request.tools)
            ]  # fmt: skip
            if (choice := _tool_choice(getattr(request, "tool_choice", None))) is not None:
                params["tool_choice"] = choice
        return params

    def complete(self, model: str, request: ChatRequest, *, timeout: float) -> ChatResult:
        try:
            message = self.client.messages.create(
                **self._params(model, request), timeout=self.upstream.timeout_for(timeout)
            )
        except Exception as exc:
            raise _normalise(exc) from exc
        text = "".join(block.text for block in message.content if block.type == "text")
        calls = [
            ToolCall(block.id or new_call_id(), block.name, json.dumps(block.input))
            for block in message.content
            if block.type == "tool_use"
        ]
        usage = Usage(message.usage.input_tokens, message.usage.output_tokens)
        return ChatResult(text, usage, FINISH.get(message.stop_reason or "", "stop"), calls)

    def stream(self, model: str, request: ChatRequest, *, timeout: float) -> Generator[str | StreamEnd, None, None]:
        """Text deltas, then one StreamEnd. Closing the generator closes the upstream connection."""
        try:
            events = self.client.messages.create(
                **self._params(model, request), stream=True, timeout=self.upstream.timeout_for(timeout)
            )
        except Exception as exc:
            raise _normalise(exc) from exc
        prompt_tokens = completion_tokens = 0
        finish: str | None = None
        calls: dict[int, dict[str, str]] = {}  # tool_use blocks by their index; input arrives as partial JSON
        try:
            for event in events:
                if event.type == "message_start":
                    prompt_tokens = event.message.usage.input_tokens or 0
                elif event.type == "content_block_start" and event.content_block.type == "tool_use":
                    block = event.content_block
                    calls[event.index] = {"id": block.id, "name": block.name, "arguments": ""}
                elif event.type == "content_block_delta":
                    if event.delta.type == "text_delta" and event.delta.text:
                        yield event.delta.text
                    elif event.delta.type == "input_json_delta" and event.index in calls:
                        calls[event.index]["arguments"] += event.delta.partial_json
                elif event.type == "message_delta":
                    finish = FINISH.get(event.delta.stop_reason or "", "stop")
                    completion_tokens = event.usage.output_tokens or completion_tokens
                elif event.type == "message_stop" and finish is None:
                    finish = "stop"
        except GeneratorExit:
            events.close()
            raise
        except Exception as exc:
            events.close()
            raise _normalise(exc) from exc
        if finish is None:
            raise UpstreamUnavailable("The model provider closed the stream before it finished.")
        yield StreamEnd(
            usage=Usage(prompt_tokens, completion_tokens),
            finish_reason=finish,
            tool_calls=[ToolCall(c["id"] or new_call_id(), c["name"], c["arguments"] or "{}")
                        for _, c in sorted(calls.items())],
        )  # fmt: skip

    def embed(self, model: str, texts: list[str], *, dimensions: int, timeout: float) -> EmbeddingResult:
        raise BadRequest("Anthropic offers no embedding models; choose an embedding model of another provider.")

    def list_models(self, *, timeout: float) -> list[UpstreamModel]:
        try:
            page = self.client.models.list(limit=1000, timeout=self.upstream.timeout_for(timeout))
            return [UpstreamModel(model.id) for model in page.data]
        except Exception as exc:
            raise _normalise(exc) from exc
