"""The OpenAI protocol, through the `openai` SDK: OpenAI itself, Azure OpenAI (its deployments and API
versions) and every OpenAI-compatible server (Ollama, vLLM, LM Studio, llama.cpp, OpenRouter, Together, Groq)."""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import weakref
from collections.abc import AsyncGenerator, Generator, Iterator
from typing import Any

import aiohttp
import httpx2
import openai
import orjson

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


class NoCookies(http.cookiejar.CookieJar):
    """A model API needs no cookies: none are kept or sent (and the per-request check of the jar is free)."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def add_cookie_header(self, request: Any) -> None:
        return None

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _without_nulls(value: Any) -> Any:
    """As the SDK's model_dump(exclude_none=True) gave it."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


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
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
        return Timeout("The model did not answer in time.")
    if isinstance(exc, openai.APIConnectionError):
        return UpstreamUnavailable(f"Could not reach the model provider: {exc}")
    if isinstance(exc, httpx2.TransportError):  # what the SDK reports as APIConnectionError, on the direct path
        return UpstreamUnavailable("Could not reach the model provider: Connection error.")
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


_JSON = {"Content-Type": "application/json"}


def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    # Per connect and per read, as the SDK's timeout is: a long stream is fine while its tokens keep coming.
    return aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)


def _anormalise(exc: Exception) -> LLMError:
    """_normalise, for aiohttp's errors too."""
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return Timeout("The model did not answer in time.")
    if isinstance(exc, aiohttp.ClientError):  # refused, reset, cut off mid-body
        return UpstreamUnavailable("Could not reach the model provider: Connection error.")
    return _normalise(exc)


def _chat_result(response: Any, request: ChatRequest) -> ChatResult:
    """An OpenAI chat completion's JSON as our result."""
    try:
        choice = response["choices"][0]
        message = choice.get("message") or {}
    except Exception as exc:
        raise _normalise(exc) from exc
    text = message.get("content") or ""
    calls = [
        ToolCall(call.get("id") or new_call_id(), call["function"]["name"], call["function"].get("arguments") or "")
        for call in message.get("tool_calls") or []
        if call.get("type", "function") == "function"
    ]
    if (used := response.get("usage")) is not None:
        usage = Usage(used.get("prompt_tokens") or 0, used.get("completion_tokens") or 0)
    else:
        usage = Usage(estimate_prompt_tokens(request.messages), estimate_tokens(text), estimated=True)
    logprobs = _without_nulls(choice["logprobs"]) if choice.get("logprobs") is not None else None
    return ChatResult(text, usage, choice.get("finish_reason") or "stop", calls, logprobs)


def _embedding_result(response: Any, texts: list[str]) -> EmbeddingResult:
    try:
        vectors = [item["embedding"] for item in sorted(response["data"], key=lambda d: d["index"])]
    except Exception as exc:
        raise _normalise(exc) from exc
    used = response.get("usage")
    tokens = used["prompt_tokens"] if used else sum(estimate_tokens(t) for t in texts)
    return EmbeddingResult(vectors, Usage(tokens, 0, estimated=not used))


class _StreamMerge:
    """A streamed answer put together from OpenAI's chunks (as JSON): text deltas, tool calls arriving in
    pieces keyed by their index, the finish reason and the usage of the last chunk."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.usage: Usage | None = None
        self.finish: str | None = None
        self.calls: dict[int, dict[str, str]] = {}

    def feed(self, chunk: dict[str, Any]) -> list[str]:
        deltas = []
        if (used := chunk.get("usage")) is not None:
            self.usage = Usage(used.get("prompt_tokens") or 0, used.get("completion_tokens") or 0)
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if content := delta.get("content"):
                self.parts.append(content)
                deltas.append(content)
            for piece in delta.get("tool_calls") or []:
                call = self.calls.setdefault(piece.get("index", 0), {"id": "", "name": "", "arguments": ""})
                call["id"] = piece.get("id") or call["id"]
                if (function := piece.get("function")) is not None:
                    call["name"] += function.get("name") or ""
                    call["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return deltas

    def end(self, request: ChatRequest) -> StreamEnd:
        if self.finish is None:
            raise UpstreamUnavailable("The model provider closed the stream before it finished.")
        text = "".join(self.parts)
        return StreamEnd(
            usage=self.usage or Usage(estimate_prompt_tokens(request.messages), estimate_tokens(text), estimated=True),
            finish_reason=self.finish,
            tool_calls=[
                ToolCall(c["id"] or new_call_id(), c["name"], c["arguments"]) for _, c in sorted(self.calls.items())
            ],
        )


class OpenAIProvider:
    """Any OpenAI-compatible server (OpenAI, vLLM, Ollama, LM Studio, llama.cpp, OpenRouter, ...)."""

    label = "openai"

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        # Retries, timeouts and fallbacks are the router's: the SDK makes exactly one attempt.
        self.http = openai.DefaultHttpxClient(cookies=NoCookies())  # the SDK's pool and defaults; no cookie jar
        common: dict[str, Any] = {
            "api_key": upstream.api_key or "unused",
            "max_retries": 0,
            "default_headers": upstream.headers or None,
            "http_client": self.http,
        }
        self.base_url: str | None = None  # set where chat and embeddings are posted without the SDK's layers
        if upstream.kind == "azure_openai":
            # The model name is the Azure deployment's name.
            self.client: openai.OpenAI = openai.AzureOpenAI(
                azure_endpoint=upstream.base_url, api_version=upstream.api_version or "2024-10-21", **common
            )
        else:
            self.client = openai.OpenAI(base_url=upstream.base_url, **common)
            self.base_url = str(self.client.base_url).rstrip("/")
            sent = {name: value for name, value in self.client.default_headers.items() if isinstance(value, str)}
            # The SDK's bearer key, then its headers (an upstream's own headers last, as the SDK merges them).
            self.headers = {"Authorization": f"Bearer {upstream.api_key or 'unused'}", **sent}

    def _post(self, path: str, body: dict[str, Any], *, timeout: float) -> Any:
        """POST a JSON body, read a JSON answer. The SDK's per-call work (its parameter transform, request
        options and response models) is most of a call's CPU, so the hot calls go straight to its connection
        pool with its headers; an error status becomes the SDK's own exception (_normalise reads those). Azure,
        with its deployment paths and API versions, goes through the SDK."""
        if self.base_url is None:
            raw = self.client.post(path, body=body, cast_to=httpx2.Response, options={"timeout": timeout})
        else:
            raw = self.http.post(self.base_url + path, content=orjson.dumps(body), headers=self.headers,
                                 timeout=timeout)  # fmt: skip
            if raw.status_code >= 400:
                raise self.client._make_status_error_from_response(raw)
        return orjson.loads(raw.content)

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
            response = self._post("/chat/completions", self._params(model, request),
                                  timeout=self.upstream.timeout_for(timeout))  # fmt: skip
        except Exception as exc:
            raise _normalise(exc) from exc
        return _chat_result(response, request)

    def embed(self, model: str, texts: list[str], *, dimensions: int, timeout: float) -> EmbeddingResult:
        body = {"model": model, "input": texts, "dimensions": dimensions, "encoding_format": "float"}
        try:
            response = self._post("/embeddings", body, timeout=self.upstream.timeout_for(timeout))
        except Exception as exc:
            raise _normalise(exc) from exc
        return _embedding_result(response, texts)

    # --- The async path (saas/llm/gateway_async.py): the same requests on an asyncio connection pool -------

    @property
    def has_async(self) -> bool:
        """Chat and embeddings can go over asyncio (Azure goes through the SDK's sync client, in a thread)."""
        return self.base_url is not None

    def _session(self) -> aiohttp.ClientSession:
        """This provider's keep-alive pool on the running event loop (an asyncio connection belongs to its
        loop). aiohttp, not the SDK's httpx: about half the CPU per request on the event loop."""
        loop = asyncio.get_running_loop()
        sessions = self.__dict__.setdefault("_sessions", weakref.WeakKeyDictionary())
        session = sessions.get(loop)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30, enable_cleanup_closed=False)
            session = sessions[loop] = aiohttp.ClientSession(
                connector=connector, headers=self.headers, cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent",), auto_decompress=True,
            )  # fmt: skip
        return session

    def _status_error(self, status: int, headers: Any, body: bytes, url: str) -> Exception:
        """The SDK's own exception for an error status (what _normalise reads), as the sync path raises it."""
        response = httpx2.Response(status, headers=list(headers.items()), content=body,
                                   request=httpx2.Request("POST", url))  # fmt: skip
        return self.client._make_status_error_from_response(response)

    async def _apost(self, path: str, body: dict[str, Any], *, timeout: float) -> Any:
        url = self.base_url + path  # type: ignore[operator]
        async with self._session().post(url, data=orjson.dumps(body), timeout=_timeout(timeout),
                                        headers=_JSON) as raw:  # fmt: skip
            content = await raw.read()
            if raw.status >= 400:
                raise self._status_error(raw.status, raw.headers, content, url)
        return orjson.loads(content)

    async def acomplete(self, model: str, request: ChatRequest, *, timeout: float) -> ChatResult:
        try:
            response = await self._apost("/chat/completions", self._params(model, request),
                                         timeout=self.upstream.timeout_for(timeout))  # fmt: skip
        except Exception as exc:
            raise _anormalise(exc) from exc
        return _chat_result(response, request)

    async def aembed(self, model: str, texts: list[str], *, dimensions: int, timeout: float) -> EmbeddingResult:
        body = {"model": model, "input": texts, "dimensions": dimensions, "encoding_format": "float"}
        try:
            response = await self._apost("/embeddings", body, timeout=self.upstream.timeout_for(timeout))
        except Exception as exc:
            raise _anormalise(exc) from exc
        return _embedding_result(response, texts)

    async def astream(
        self, model: str, request: ChatRequest, *, timeout: float
    ) -> AsyncGenerator[str | StreamEnd, None]:
        """Text deltas, then one StreamEnd, read from the upstream's server-sent events on the event loop.
        Closing the iterator (or cancelling its task) closes the upstream connection."""
        body = self._params(model, request) | {"stream": True, "stream_options": {"include_usage": True}}
        merged = _StreamMerge()
        url = self.base_url + "/chat/completions"  # type: ignore[operator]
        try:
            async with self._session().post(url, data=orjson.dumps(body), headers=_JSON,
                                            timeout=_timeout(self.upstream.timeout_for(timeout))) as raw:  # fmt: skip
                if raw.status >= 400:
                    raise self._status_error(raw.status, raw.headers, await raw.read(), url)
                buffer = b""
                async for data in raw.content.iter_any():
                    buffer += data
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if not line.startswith(b"data:"):
                            continue
                        payload = line[5:].strip()
                        if payload == b"[DONE]":
                            break
                        chunk = orjson.loads(payload)
                        if isinstance(chunk, dict) and chunk.get("error"):
                            raise UpstreamUnavailable(f"The model provider failed mid-stream: {chunk['error']}")
                        for delta in merged.feed(chunk):
                            yield delta
                    else:
                        continue
                    break  # [DONE]
                await _read_to_the_end(raw)
        except (GeneratorExit, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise _anormalise(exc) from exc
        yield merged.end(request)

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


STREAM_END_SECONDS = 0.5  # how long the end of a body may lag its [DONE] (the answer waits for it)


async def _read_to_the_end(raw: Any) -> None:
    """The rest of a stream's body after its [DONE] (the last chunk of its chunked encoding, usually already
    here): a response read to its end gives its keep-alive connection back to the pool, where one released
    unread would be closed, and the next call would pay for a new connection (TCP, and TLS to a real provider).
    An upstream that keeps the body open after [DONE] costs its connection, not the call."""
    if raw.content.at_eof():
        return
    with contextlib.suppress(Exception):
        async with asyncio.timeout(STREAM_END_SECONDS):
            await raw.content.read()
