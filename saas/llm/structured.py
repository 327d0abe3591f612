"""Structured output: an answer asked for as JSON (`response_format` json_object or json_schema) is checked
before it leaves the gateway.

The gateway calls the provider through `complete` and `stream` here. When the request asks for JSON, the
answer must parse, be an object, and (json_schema) validate against the schema (`jsonschema`, the draft the
schema names, 2020-12 otherwise). An answer that does not is asked for once more, with the problem quoted to
the model; a second bad answer is an InvalidStructuredOutput (502, with the validation error). A streamed
answer asked for as JSON is read whole from the upstream, checked, then sent on. An answer that calls tools
instead is not JSON to check.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Generator
from dataclasses import replace
from typing import Any, Protocol

from jsonschema import exceptions as jsonschema_exceptions
from jsonschema import validators

from saas.llm import tool_protocol
from saas.llm.providers import BadRequest, ChatRequest, ChatResult, LLMError, StreamEnd, Usage

# The OpenAI parameters ChatRequest.options carries to an OpenAI-compatible upstream as they are.
PASSED_THROUGH = (
    "stop", "seed", "logprobs", "top_logprobs", "user", "top_p", "presence_penalty", "frequency_penalty",
)  # fmt: skip
JSON_KINDS = ("json_object", "json_schema")


class InvalidStructuredOutput(LLMError):
    """The model answered twice with JSON that does not parse or does not match the requested schema."""

    kind, retryable, http_status = "invalid_structured_output", False, 502


class _Provider(Protocol):
    def complete(self, model: str, request: ChatRequest, *, timeout: float) -> ChatResult: ...

    def stream(self, model: str, request: ChatRequest, *, timeout: float) -> Generator[str | StreamEnd, None, None]: ...


def _kind(request: ChatRequest) -> str | None:
    kind = (request.response_format or {}).get("type")
    return kind if kind in JSON_KINDS else None


def _schema(response_format: dict[str, Any]) -> dict[str, Any] | None:
    spec = response_format.get("json_schema")
    return spec.get("schema") if isinstance(spec, dict) and isinstance(spec.get("schema"), dict) else None


def check_response_format(response_format: dict[str, Any] | None) -> None:
    """Refuse (400) a json_schema whose schema is not a JSON Schema, before anything is sent."""
    if response_format is None or response_format.get("type") != "json_schema":
        return
    schema = _schema(response_format)
    if schema is None:
        raise BadRequest(
            "`response_format.json_schema.schema` must be a JSON Schema object.", details={"param": "response_format"}
        )
    try:
        validators.validator_for(schema).check_schema(schema)
    except jsonschema_exceptions.SchemaError as exc:
        raise BadRequest(
            f"`response_format.json_schema.schema` is not a valid JSON Schema: {exc.message}",
            details={"param": "response_format"},
        ) from None


def problem(request: ChatRequest, text: str, calls: list[Any]) -> str | None:
    """What is wrong with an answer the request asked for as JSON, or None."""
    kind = _kind(request)
    if kind is None or calls:
        return None
    if tool_protocol.offered_tools(request.messages) is not None:  # a model driven by the text tool protocol
        text, called = tool_protocol.parse(text)
        if called:
            return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        return f"The model's answer is not valid JSON ({exc})."
    if not isinstance(value, dict):
        return "The model's answer is JSON but not a JSON object."
    schema = _schema(request.response_format or {}) if kind == "json_schema" else None
    if schema is None:
        return None
    error = jsonschema_exceptions.best_match(validators.validator_for(schema)(schema).iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path) or "the top level"
    return f"The model's answer does not match the schema at {where}: {error.message}"


def _retry(request: ChatRequest, text: str, error: str) -> ChatRequest:
    feedback = f"{error} Reply again with only the JSON, nothing else."
    return replace(request, messages=[*request.messages, {"role": "assistant", "content": text},
                                      {"role": "user", "content": feedback}])  # fmt: skip


def _sum(first: Usage, second: Usage) -> Usage:
    return Usage(first.prompt_tokens + second.prompt_tokens, first.completion_tokens + second.completion_tokens,
                 first.estimated or second.estimated)  # fmt: skip


def complete(provider: _Provider, model: str, request: ChatRequest, *, timeout: float) -> ChatResult:
    """provider.complete, with the answer checked (and asked for once more) when the request wants JSON."""
    result = provider.complete(model, request, timeout=timeout)
    error = problem(request, result.text, result.tool_calls)
    if error is None:
        return result
    second = provider.complete(model, _retry(request, result.text, error), timeout=timeout)
    if (again := problem(request, second.text, second.tool_calls)) is not None:
        raise InvalidStructuredOutput(
            f"The model did not produce the requested JSON (asked twice). {again}", details={"first_error": error}
        )
    return replace(second, usage=_sum(result.usage, second.usage))


def stream(
    provider: _Provider, model: str, request: ChatRequest, *, timeout: float
) -> Generator[str | StreamEnd, None, None]:
    """provider.stream; for an answer asked for as JSON, the whole answer, checked, then sent on in pieces."""
    if _kind(request) is None:
        return provider.stream(model, request, timeout=timeout)
    return _checked_stream(provider, model, request, timeout)


def _checked_stream(
    provider: _Provider, model: str, request: ChatRequest, timeout: float
) -> Generator[str | StreamEnd, None, None]:
    upstream = provider.stream(model, request, timeout=timeout)
    parts: list[str] = []
    end: StreamEnd | None = None
    try:
        for item in upstream:
            if isinstance(item, StreamEnd):
                end = item
            else:
                parts.append(item)
    finally:
        upstream.close()  # also when the client went away while the answer was being read
    if end is None:
        return
    text = "".join(parts)
    if (error := problem(request, text, end.tool_calls)) is not None:
        second = provider.complete(model, _retry(request, text, error), timeout=timeout)
        if (again := problem(request, second.text, second.tool_calls)) is not None:
            raise InvalidStructuredOutput(
                f"The model did not produce the requested JSON (asked twice). {again}", details={"first_error": error}
            )
        text = second.text
        end = StreamEnd(_sum(end.usage, second.usage), second.finish_reason, second.tool_calls)
    if text:
        yield text
    yield end


# --- The same on the async path (saas/llm/gateway_async.py): `provider` has acomplete / astream -------------


async def acomplete(provider: Any, model: str, request: ChatRequest, *, timeout: float) -> ChatResult:
    result = await provider.acomplete(model, request, timeout=timeout)
    error = problem(request, result.text, result.tool_calls)
    if error is None:
        return result
    second = await provider.acomplete(model, _retry(request, result.text, error), timeout=timeout)
    if (again := problem(request, second.text, second.tool_calls)) is not None:
        raise InvalidStructuredOutput(
            f"The model did not produce the requested JSON (asked twice). {again}", details={"first_error": error}
        )
    return replace(second, usage=_sum(result.usage, second.usage))


async def astream(provider: Any, model: str, request: ChatRequest, *, timeout: float) -> AsyncGenerator[Any, None]:
    if _kind(request) is None:
        async for item in provider.astream(model, request, timeout=timeout):
            yield item
        return
    parts: list[str] = []
    end: StreamEnd | None = None
    upstream = provider.astream(model, request, timeout=timeout)
    try:
        async for item in upstream:
            if isinstance(item, StreamEnd):
                end = item
            else:
                parts.append(item)
    finally:
        await upstream.aclose()
    if end is None:
        return
    text = "".join(parts)
    if (error := problem(request, text, end.tool_calls)) is not None:
        second = await provider.acomplete(model, _retry(request, text, error), timeout=timeout)
        if (again := problem(request, second.text, second.tool_calls)) is not None:
            raise InvalidStructuredOutput(
                f"The model did not produce the requested JSON (asked twice). {again}", details={"first_error": error}
            )
        text = second.text
        end = StreamEnd(_sum(end.usage, second.usage), second.finish_reason, second.tool_calls)
    if text:
        yield text
    yield end


def cache_material(request: ChatRequest) -> dict[str, Any]:
    """What else of a request changes its answer, for the exact cache's key."""
    return {"tool_choice": request.tool_choice, "parallel_tool_calls": request.parallel_tool_calls,
            "options": request.options}  # fmt: skip
