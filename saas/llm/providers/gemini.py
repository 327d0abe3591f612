"""Google's Gemini API (generateContent / streamGenerateContent), through the `google-genai` SDK: OpenAI-shaped
messages become `contents` (assistant turns are role "model"; tool calls and results are functionCall /
functionResponse parts), tools become function declarations, and answers come back OpenAI-shaped."""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

from google.genai import Client, errors, types

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
    estimate_prompt_tokens,
    estimate_tokens,
    json_arguments,
    system_text,
)
from saas.llm.tool_protocol import ToolCall, new_call_id

FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
          "PROHIBITED_CONTENT": "content_filter", "BLOCKLIST": "content_filter", "SPII": "content_filter"}  # fmt: skip


def _normalise(exc: Exception) -> LLMError:
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, errors.APIError):
        code = int(exc.code or 0)
        if code == 429:
            return RateLimited("The model provider is rate limiting us.")
        if code >= 500:
            return UpstreamUnavailable(f"The model provider failed ({code}).")
        message = str(exc.message or exc.status or "")
        if "token" in message.lower() and ("exceed" in message.lower() or "too long" in message.lower()):
            return ContextTooLong("The request is longer than the model's context window.")
        return BadRequest(f"The model provider refused the request ({code}): {message}")
    # The SDK talks through httpx or its fork httpx2: their errors are told apart by class name.
    lineage = {cls.__name__ for cls in type(exc).__mro__}
    if "TimeoutException" in lineage:
        return Timeout("The model did not answer in time.")
    if "TransportError" in lineage:
        return UpstreamUnavailable("Could not reach the model provider (Gemini).")
    if isinstance(exc, ValueError):
        return UpstreamUnavailable(f"The model provider sent a malformed response: {exc}")
    return UpstreamUnavailable(f"Unexpected provider failure: {type(exc).__name__}")


def to_contents(messages: list[dict[str, Any]]) -> list[types.Content]:
    names: dict[str, str] = {}  # tool call id -> function name: a functionResponse is matched by name
    contents: list[types.Content] = []
    for message in messages:
        role = message.get("role")
        parts: list[types.Part] = []
        if role in ("system", "developer"):
            continue
        if role == "tool":
            call_id = str(message.get("tool_call_id") or "")
            response = types.FunctionResponse(
                id=call_id or None, name=names.get(call_id, "tool"), response={"result": message.get("content") or ""}
            )
            parts.append(types.Part(function_response=response))
        else:
            if message.get("content"):
                parts.append(types.Part(text=str(message["content"])))
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                names[call.get("id", "")] = function.get("name", "")
                parts.append(types.Part(function_call=types.FunctionCall(
                    id=call.get("id") or None, name=function.get("name", ""),
                    args=json_arguments(function.get("arguments") or ""))))  # fmt: skip
        if not parts:
            continue
        wire_role = "model" if role == "assistant" else "user"
        if contents and contents[-1].role == wire_role:
            contents[-1].parts = [*(contents[-1].parts or []), *parts]
        else:
            contents.append(types.Content(role=wire_role, parts=parts))
    return contents


def _tool_config(choice: Any) -> types.ToolConfig | None:
    if choice in (None, "auto"):
        return None
    mode, names = {"required": "ANY", "none": "NONE"}.get(choice) if isinstance(choice, str) else None, None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        mode, names = "ANY", [choice["function"].get("name", "")]
    if mode is None:
        return None
    return types.ToolConfig(function_calling_config=types.FunctionCallingConfig(
        mode=mode, allowed_function_names=names))  # type: ignore[arg-type]  # fmt: skip


def _config(request: ChatRequest) -> types.GenerateContentConfig:
    config = types.GenerateContentConfig(
        system_instruction=system_text(request.messages) or None,
        max_output_tokens=request.max_tokens,
        temperature=request.temperature,
    )
    if request.tools:
        config.tools = [types.Tool(function_declarations=[
            types.FunctionDeclaration(name=f["name"], description=f.get("description") or "",
                                      parameters_json_schema=f.get("parameters") or None)
            for f in (t["function"] for t in request.tools)])]  # fmt: skip
        config.tool_config = _tool_config(getattr(request, "tool_choice", None))
        config.automatic_function_calling = types.AutomaticFunctionCallingConfig(disable=True)
    response_format = request.response_format or {}
    if response_format.get("type") in ("json_object", "json_schema"):
        config.response_mime_type = "application/json"
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema:
            config.response_json_schema = schema
    return config


def _parts(response: types.GenerateContentResponse) -> tuple[str, list[ToolCall], str | None]:
    """Text, function calls and finish reason of one response (or stream chunk)."""
    if not response.candidates:
        return "", [], None
    candidate = response.candidates[0]
    text, calls = "", []
    for part in (candidate.content.parts if candidate.content else None) or []:
        if part.text and not part.thought:
            text += part.text
        if part.function_call is not None:
            call = part.function_call
            calls.append(ToolCall(call.id or new_call_id(), call.name or "", json.dumps(call.args or {})))
    reason = candidate.finish_reason.value if candidate.finish_reason else None
    return text, calls, reason


def _usage(response: types.GenerateContentResponse | None, request: ChatRequest, text: str) -> Usage:
    meta = response.usage_metadata if response is not None else None
    if meta is None or meta.prompt_token_count is None:
        return Usage(estimate_prompt_tokens(request.messages), estimate_tokens(text), estimated=True)
    return Usage(meta.prompt_token_count, meta.candidates_token_count or 0)


class GeminiProvider:
    label = "gemini"

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self._clients: dict[float, Client] = {}

    def client(self, timeout: float) -> Client:
        """A client per timeout (google-genai sets timeouts per client, in milliseconds). The SDK's retries are
        off: retries and fallbacks are the router's."""
        seconds = self.upstream.timeout_for(timeout)
        if seconds not in self._clients:
            self._clients[seconds] = Client(
                api_key=self.upstream.api_key or "unused",
                http_options=types.HttpOptions(
                    base_url=self.upstream.base_url or None,
                    headers=self.upstream.headers or None,
                    timeout=int(seconds * 1000),
                    retry_options=types.HttpRetryOptions(attempts=1),
                ),
            )
        return self._clients[seconds]

    def complete(self, model: str, request: ChatRequest, *, timeout: float) -> ChatResult:
        try:
            response = self.client(timeout).models.generate_content(
                model=model, contents=to_contents(request.messages), config=_config(request)
            )
        except Exception as exc:
            raise _normalise(exc) from exc
        text, calls, reason = _parts(response)
        finish = "tool_calls" if calls else FINISH.get(reason or "STOP", "stop")
        return ChatResult(text, _usage(response, request, text), finish, calls)

    def stream(self, model: str, request: ChatRequest, *, timeout: float) -> Generator[str | StreamEnd, None, None]:
        try:
            chunks = self.client(timeout).models.generate_content_stream(
                model=model, contents=to_contents(request.messages), config=_config(request)
            )
            iterator = iter(chunks)
        except Exception as exc:
            raise _normalise(exc) from exc
        texts: list[str] = []
        calls: list[ToolCall] = []
        reason: str | None = None
        last = None
        try:
            for chunk in iterator:
                last = chunk
                text, more, finish = _parts(chunk)
                calls.extend(more)
                reason = finish or reason
                if text:
                    texts.append(text)
                    yield text
        except GeneratorExit:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
            raise
        except Exception as exc:
            raise _normalise(exc) from exc
        if reason is None:
            raise UpstreamUnavailable("The model provider closed the stream before it finished.")
        finish = "tool_calls" if calls else FINISH.get(reason, "stop")
        yield StreamEnd(usage=_usage(last, request, "".join(texts)), finish_reason=finish, tool_calls=calls)

    def embed(self, model: str, texts: list[str], *, dimensions: int, timeout: float) -> EmbeddingResult:
        try:
            response = self.client(timeout).models.embed_content(
                model=model,
                contents=list[Any](texts),
                config=types.EmbedContentConfig(output_dimensionality=dimensions),
            )
        except Exception as exc:
            raise _normalise(exc) from exc
        vectors = [list(e.values or []) for e in response.embeddings or []]
        return EmbeddingResult(vectors, Usage(sum(estimate_tokens(t) for t in texts), 0, estimated=True))

    def list_models(self, *, timeout: float) -> list[UpstreamModel]:
        try:
            found = list(self.client(timeout).models.list())
        except Exception as exc:
            raise _normalise(exc) from exc
        models = []
        for model in found:
            name = (model.name or "").removeprefix("models/")
            actions = model.supported_actions or []
            kind = "embedding" if any("embed" in a.lower() for a in actions) else "chat"
            models.append(UpstreamModel(name, kind))
        return sorted(models, key=lambda m: m.id)
