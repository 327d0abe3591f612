"""OpenAI's shapes on /v1: the chat completion request (validated with pydantic, as the openai SDK itself
describes it), its translation into the gateway's ChatRequest, and the answer, chunks and embeddings as
OpenAI's clients read them. The views are in api.py.

Every parameter of OpenAI's chat completions API is accepted (the list is the installed `openai` SDK's own):
those the gateway uses are validated and used, the rest (`metadata`, `store`, `service_tier`, ...) are
accepted and ignored. A parameter OpenAI does not know is refused as OpenAI refuses it ("Unrecognized request
argument supplied"), so a typo is not silently ignored.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import struct
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from typing import Any, Literal

from openai.types.chat.completion_create_params import CompletionCreateParamsBase
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator
from pydantic import ValidationError as PydanticValidationError
from rest_framework import serializers

from saas.core.streaming import sse
from saas.llm import gateway, structured
from saas.llm.local_engine import ENGINE_LABEL
from saas.llm.providers import ChatRequest, LLMError

OPENAI_PARAMETERS = frozenset(CompletionCreateParamsBase.__annotations__) | {"stream"}
REFUSED = {"functions": "tools", "function_call": "tool_choice"}  # the deprecated function-calling API
MAX_TOOLS = 128
NAME = r"^[A-Za-z0-9_-]{1,64}$"


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")  # fields of OpenAI's nested objects we do not use pass unused


class ToolCallFunctionIn(_Lenient):
    name: str = Field(max_length=64)
    arguments: str = Field(max_length=2_000_000)


class ToolCallIn(_Lenient):
    id: str = Field(max_length=256)
    type: Literal["function"] = "function"
    function: ToolCallFunctionIn


class ChatMessageIn(_Lenient):
    role: str = Field(max_length=32)
    # A string, text parts (joined), or null for an assistant message that only calls tools.
    content: str | list[dict[str, Any]] | None = None
    name: str | None = Field(default=None, max_length=64)
    tool_calls: list[ToolCallIn] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_call_id: str | None = Field(default=None, max_length=256)

    @field_validator("content")
    @classmethod
    def _text_parts(cls, value: Any) -> str | None:
        if not isinstance(value, list):
            return value  # type: ignore[no-any-return]
        if not all(part.get("type") == "text" and isinstance(part.get("text"), str) for part in value):
            raise ValueError("only text content parts are supported (no images, audio or files)")
        text = "\n".join(part["text"] for part in value)
        if len(text) > 2_000_000:
            raise ValueError("at most 2,000,000 characters")
        return text


class FunctionIn(_Lenient):
    name: str = Field(pattern=NAME)
    description: str | None = Field(default=None, max_length=10_000)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolIn(_Lenient):
    type: Literal["function"]
    function: FunctionIn


class NamedFunctionIn(_Lenient):
    name: str = Field(pattern=NAME)


class ToolChoiceFunctionIn(_Lenient):
    type: Literal["function"]
    function: NamedFunctionIn


class JsonSchemaIn(_Lenient):
    name: str = Field(pattern=NAME)
    description: str | None = Field(default=None, max_length=10_000)
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormatIn(_Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaIn | None = None


class StreamOptionsIn(_Lenient):
    include_usage: bool = False


class _ChatCompletionBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(max_length=64)
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=gateway.MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptionsIn | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    response_format: ResponseFormatIn | None = None
    n: int | None = None
    tools: list[ToolIn] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceFunctionIn | None = None
    parallel_tool_calls: bool | None = None
    stop: str | list[str] | None = Field(default=None, max_length=4)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    user: str | None = Field(default=None, max_length=256)


# The rest of OpenAI's parameters: accepted (any value) and ignored.
ChatCompletionIn = create_model(  # type: ignore[call-overload]
    "ChatCompletionIn",
    __base__=_ChatCompletionBase,
    **{name: (Any, None) for name in sorted(OPENAI_PARAMETERS - set(_ChatCompletionBase.model_fields))},
)


def _refuse(param: str, message: str) -> serializers.ValidationError:
    return serializers.ValidationError({param: [message]})


def validated_completion(data: Any) -> dict[str, Any]:
    """The request as a dict, or a DRF ValidationError naming the first bad parameter (OpenAI's `param`)."""
    if isinstance(data, dict):
        unknown = sorted(set(data) - OPENAI_PARAMETERS)
        if unknown:
            raise _refuse(unknown[0], f"Unrecognized request argument supplied: {unknown[0]}")
    try:
        parsed = ChatCompletionIn.model_validate(data).model_dump(by_alias=True)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        where = [str(part) for part in first["loc"]]
        param = where[0] if where else "body"
        detail = ".".join(where[1:]) if len(where) > 1 else ""
        message = first["msg"]
        raise _refuse(param, f"{detail}: {message}" if detail else message) from None
    for name, instead in REFUSED.items():
        if parsed.get(name) is not None:
            raise _refuse(name, f"`{name}` is OpenAI's deprecated function-calling API: use `{instead}`.")
    if parsed["n"] not in (None, 1):
        raise _refuse("n", "Only n=1 is supported: send the request again for another answer.")
    _check_tool_choice(parsed)
    return parsed


def _check_tool_choice(data: dict[str, Any]) -> None:
    choice, tools = data["tool_choice"], data["tools"] or []
    names = [t["function"]["name"] for t in tools]
    if len(set(names)) != len(names):
        raise _refuse("tools", "Each tool needs a name of its own.")
    if isinstance(choice, dict) and choice["function"]["name"] not in names:
        raise _refuse("tool_choice", f"tool_choice names {choice['function']['name']!r}, which is not in `tools`.")
    if choice == "required" and not tools:
        raise _refuse("tool_choice", "tool_choice 'required' needs `tools`.")
    response_format = data["response_format"] or {}
    if response_format.get("type") == "json_schema" and response_format.get("json_schema") is None:
        raise _refuse("response_format", "response_format json_schema needs `json_schema`.")


def _message(m: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": m["role"], "content": m["content"]}
    if m.get("tool_calls"):
        message["tool_calls"] = m["tool_calls"]
    if m.get("tool_call_id") is not None:
        message["tool_call_id"] = m["tool_call_id"]
    if m["content"] is None and not m.get("tool_calls"):
        message["content"] = ""  # OpenAI reads a null content as empty
    return message


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def chat_request(data: dict[str, Any], *, org_id: Any) -> ChatRequest:
    options = {name: data[name] for name in structured.PASSED_THROUGH if data.get(name) is not None}
    if "user" in options:  # a stable pseudonym for the upstream's abuse monitoring, not the caller's own id
        options["user"] = hashlib.sha256(f"{org_id}:{options['user']}".encode()).hexdigest()[:32]
    tools = [_without_nulls(t) for t in data["tools"]] if data["tools"] else None
    return ChatRequest(
        messages=[_message(m) for m in data["messages"]],
        max_tokens=data.get("max_completion_tokens") or data.get("max_tokens"),
        temperature=data.get("temperature"),
        response_format=_without_nulls(data["response_format"]),
        tools=tools,
        tool_choice=data["tool_choice"] if tools else None,
        parallel_tool_calls=data["parallel_tool_calls"] if tools else None,
        options=options or None,
    )


def usage_body(usage: Any) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def engine_note(engine: str, data: dict[str, Any]) -> dict[str, str]:
    """What the local engine did with a request for JSON or a tool call (it is not a generative model)."""
    if engine != ENGINE_LABEL:
        return {}
    if (data.get("response_format") or {}).get("type") == "json_schema":
        return {"engine_note": "json_schema filled field by field from the passages that best match each field"}
    if data.get("tools") and data.get("tool_choice") not in (None, "auto", "none"):
        return {"engine_note": "tool arguments filled from the passages that best match each parameter"}
    return {}


def completion_body(result: gateway.GatewayResult, *, created: int, data: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": result.text, "refusal": None}
    finish = result.finish_reason
    if result.tool_calls:
        message["content"] = result.text or None
        message["tool_calls"] = [c.as_message_part() for c in result.tool_calls]
        finish = "tool_calls"
    return {
        "id": f"chatcmpl-{result.call_id}",
        "object": "chat.completion",
        "created": created,
        "model": result.model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": result.logprobs, "finish_reason": finish}],
        "usage": usage_body(result.usage),
        # The local engine says what it is in every response: extractive quotes, not generated text.
        "crewdesk": {"cached": result.cached, "call_id": result.call_id, "engine": result.engine}
        | engine_note(result.engine, data),
    }


class Chunks:
    """The gateway's stream items as OpenAI's chunks (SSE bytes): shared by the sync view and the async path.
    With tools offered, the answer is sent when it is complete: its text, then each tool call (its id and name,
    then its arguments), as OpenAI streams them."""

    def __init__(self, *, created: int, include_usage: bool, with_tools: bool) -> None:
        self.ident = f"chatcmpl-{time.monotonic_ns()}"
        self.created, self.include_usage, self.with_tools = created, include_usage, with_tools
        self.model = ""

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse(
            {
                "id": self.ident, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
        )  # fmt: skip

    def opening(self, first: Any) -> tuple[bytes, bool]:
        """The opening chunk; True when it carries the first item too (the first token is here already: one
        write for both)."""
        opening = self.chunk({"role": "assistant", "content": ""})
        if isinstance(first, str) and not self.with_tools:
            return opening + self.chunk({"content": first}), True
        return opening, False

    def item(self, item: Any) -> tuple[bytes, bool]:
        """An item's bytes; True when it was the end."""
        if not isinstance(item, gateway.GatewayStreamEnd):
            return (b"" if self.with_tools else self.chunk({"content": item})), False
        self.model = item.model
        finish = item.finish_reason
        out = []
        if self.with_tools:
            if item.text:
                out.append(self.chunk({"content": item.text}))
            for index, call in enumerate(item.tool_calls):
                part = {"index": index, "id": call.id, "type": "function",
                        "function": {"name": call.name, "arguments": ""}}  # fmt: skip
                out.append(self.chunk({"tool_calls": [part]}))
                out.append(self.chunk({"tool_calls": [{"index": index, "function": {"arguments": call.arguments}}]}))
        if item.tool_calls:
            finish = "tool_calls"
        out.append(self.chunk({}, finish))
        if self.include_usage:
            out.append(sse(
                {"id": self.ident, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                 "choices": [], "usage": usage_body(item.usage)}
            ))  # fmt: skip
        return b"".join(out), True

    DONE = b"data: [DONE]\n\n"


def openai_chunks(
    first: Any,
    stream: Generator[Any, None, None],
    *,
    created: int,
    include_usage: bool,
    with_tools: bool,
    on_error: Any,
) -> Iterator[bytes]:
    """The gateway's stream as OpenAI's chunks (see Chunks)."""
    chunks = Chunks(created=created, include_usage=include_usage, with_tools=with_tools)
    opening, took_first = chunks.opening(first)
    yield opening
    items: Iterator[Any] = stream if took_first else itertools.chain([first], stream)
    try:
        for item in items:
            data, ended = chunks.item(item)
            if data:
                yield data
            if ended:
                break
    except LLMError as error:
        yield sse(on_error(error))
    finally:
        stream.close()  # a client that went away cancels the upstream call
    yield Chunks.DONE


async def aopenai_chunks(
    first: Any, stream: AsyncIterator[Any], *, created: int, include_usage: bool, with_tools: bool, on_error: Any
) -> AsyncGenerator[bytes, None]:
    """openai_chunks for the async path: `stream` is the gateway's async stream (gateway_async.achat_stream)."""
    chunks = Chunks(created=created, include_usage=include_usage, with_tools=with_tools)
    opening, took_first = chunks.opening(first)
    yield opening
    try:
        if not took_first:
            data, ended = chunks.item(first)
            if data:
                yield data
            if ended:
                yield Chunks.DONE
                return
        async for item in stream:
            data, ended = chunks.item(item)
            if data:
                yield data
            if ended:
                break
    except LLMError as error:
        yield sse(on_error(error))
    finally:
        await stream.aclose()  # type: ignore[attr-defined]  # a client that went away cancels the upstream call
    yield Chunks.DONE


# --- Embeddings and models ---------------------------------------------------------------------------------


def encode_embedding(vector: list[float], encoding_format: str) -> list[float] | str:
    """float: the numbers; base64: little-endian float32 bytes, base64-encoded (the openai SDK's default)."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


def model_entry(model: Any) -> dict[str, Any]:
    chat = model.kind == "chat"
    local = model.upstream == "local"
    capabilities: dict[str, Any] = {
        "chat": chat,
        "embeddings": not chat,
        "streaming": chat,
        "stream_usage": chat,
        # Tools and JSON everywhere: natively where the model has them, else through the text tool protocol
        # (saas/llm/tool_protocol.py) and the schema check (saas/llm/structured.py); the local engine fills them.
        "tools": chat,
        "tool_calling": ("native" if model.supports_tools else "text_protocol") if chat else None,
        "json_schema": chat,
        "json_schema_native": chat and (model.supports_json or local),
        "logprobs": chat and not local,
    }
    if not chat and local:
        capabilities["dimensions"] = [384]
    return {
        "id": model.alias,
        "object": "model",
        "created": int(model.created_at.timestamp()) if model.created_at else 0,  # an org model is never saved
        "owned_by": model.upstream,
        "crewdesk": {
            "engine": gateway.engine_label(model),
            "kind": model.kind,
            "tier": model.tier,
            "context_window": model.context_window,
            "capabilities": capabilities,
        },
    }
