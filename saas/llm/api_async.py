"""The async views of `/v1/chat/completions` and `/v1/embeddings` (routed here by saas/llm/asgi.py).

Everything before the model is the same synchronous code as the sync path: the DRF view classes of
saas/llm/api.py (API-key auth and scopes, the org scope, per-endpoint rate limits, body checks, the OpenAI
error shape) with a `post` that validates and admits the call (gateway_async.admit: policy, guardrails, PII,
caches, quota place). It runs on the event loop (saas.core.on_loop: its Redis round trips are awaited, and a
step on the database, such as loading a key not seen before, hops to a worker thread), not in a hop of its
own: the hand-off to a thread and the GIL passed back and forth at each blocking Redis reply cost about 0.8 ms
of CPU per call, more than the admission's own work. The model is then called on the loop (gateway_async), and
so is the end of the call when its row goes through the ledger stream (otherwise it takes one hop). Streams are
sent from the loop, chunk by chunk, with no thread behind them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from rest_framework.request import Request
from rest_framework.response import Response

from saas.core import on_loop, threads
from saas.core.responses import after_send
from saas.core.streaming import sse_response
from saas.llm import api, gateway, gateway_async, openai_compat, structured, tracing
from saas.llm.providers import LLMError


class _Admitted(Response):
    """What the admission hands back to the async view: the admitted call and what the response needs."""

    def __init__(self, **state: Any) -> None:
        super().__init__(status=200)
        self.state = state


class ChatAdmission(api.ChatCompletionsView):
    """ChatCompletionsView's checks, then the call admitted (not answered)."""

    def post(self, request: Request) -> Any:
        data = openai_compat.validated_completion(request.data)
        structured.check_response_format(data["response_format"])
        principal = request.principal  # type: ignore[attr-defined]
        chat = openai_compat.chat_request(data, org_id=principal.organization.pk)
        caller = gateway.Caller.of(principal, "chat")
        bypass = api._bypass_cache(request) or bool(data["logprobs"])  # a cached answer has no logprobs
        trace = tracing.for_caller(caller, "completion", "Chat completion", ends_with_call=True)  # written with the row
        with tracing.trace(defer=True, **trace) as recorder:
            pending = gateway_async.admit(caller=caller, model=data["model"], request=chat, bypass_cache=bypass,
                                          stream=data["stream"])  # fmt: skip
        return _Admitted(pending=pending, data=data, chat=chat, recorder=recorder, created=int(time.time()))


class EmbeddingsAdmission(api.EmbeddingsView):
    def post(self, request: Request) -> Any:
        serializer = api.EmbeddingsIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        caller = gateway.Caller.of(request.principal, "embed")  # type: ignore[attr-defined]
        pending = gateway_async.admit_embed(caller=caller, model=data["model"], texts=data["input"],
                                            dimensions=data["dimensions"])  # fmt: skip
        return _Admitted(pending=pending, data=data)


_admit_chat = ChatAdmission.as_view()
_admit_embeddings = EmbeddingsAdmission.as_view()


def _admission(view: Any, request: HttpRequest) -> HttpResponseBase:
    response = view(request)
    if not isinstance(response, _Admitted) and hasattr(response, "render"):
        response.render()  # an error (or a refusal) in its shape
    return response  # type: ignore[no-any-return]


def _json(body: dict[str, Any], status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(body, default=str), status=status, content_type="application/json")


def _error(exc: LLMError) -> HttpResponse:
    """An error after admission, in OpenAI's shape (as api.openai_exception_handler makes it)."""
    drf = api.openai_exception_handler(exc, {})
    assert drf is not None
    response = _json(drf.data, drf.status_code)
    for name, value in drf.items():
        if name.lower() != "content-type":
            response[name] = value
    return response


def _finish_trace(recorder: tracing.Recorder | None, exc: BaseException | None = None) -> None:
    if recorder is None or recorder.finished:
        return
    if exc is not None:
        recorder.fail(exc)
    recorder.finish()


async def _afinish_trace(recorder: tracing.Recorder | None, org: Any, exc: BaseException | None = None) -> None:
    """A trace the call's end did not write already (it travels with the ledger row): written in a hop."""
    if recorder is not None and not recorder.finished:
        await threads.hop(gateway_async.in_org(org, _finish_trace), recorder, exc)


async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    admitted = await on_loop.run(_admission, _admit_chat, request)
    if not isinstance(admitted, _Admitted):
        return admitted
    state = admitted.state
    pending, data, recorder = state["pending"], state["data"], state["recorder"]
    org = pending.call.caller.org
    if not data["stream"]:
        try:
            with _active(recorder):
                result = await gateway_async.achat(pending)
        except LLMError as exc:
            await _afinish_trace(recorder, org, exc)
            return _error(exc)
        except BaseException as exc:
            await _afinish_trace(recorder, org, exc)
            raise
        response = _json(openai_compat.completion_body(result, created=state["created"], data=data))
        if recorder is not None and not recorder.finished:
            after_send(response, gateway_async.in_org(org, recorder.finish), what=f"trace {recorder.id}")
        return response
    items = _traced(recorder, org, gateway_async.achat_stream(pending))
    try:
        first = await items.__anext__()  # failures before the first token still get a proper HTTP status
    except LLMError as exc:
        return _error(exc)
    chat = state["chat"]
    return sse_response(
        openai_compat.aopenai_chunks(
            first, items, created=state["created"],
            include_usage=(data.get("stream_options") or {}).get("include_usage", False),
            with_tools=bool(chat.tools) and chat.tool_choice != "none",
            on_error=lambda error: api.openai_error(error.message, error.http_status, error.kind),
        )  # type: ignore[arg-type]
    )  # fmt: skip


async def embeddings(request: HttpRequest) -> HttpResponseBase:
    admitted = await on_loop.run(_admission, _admit_embeddings, request)
    if not isinstance(admitted, _Admitted):
        return admitted
    data = admitted.state["data"]
    try:
        result = await gateway_async.aembed(admitted.state["pending"], texts=data["input"],
                                            dimensions=data["dimensions"])  # fmt: skip
    except LLMError as exc:
        return _error(exc)
    return _json(api.embeddings_body(result, data["encoding_format"]))


class _active:
    """The trace current while the block runs (for the call's span), on the loop."""

    def __init__(self, recorder: tracing.Recorder | None) -> None:
        self.recorder = recorder
        self.context: contextlib.AbstractContextManager[Any] | None = None

    def __enter__(self) -> None:
        if self.recorder is not None:
            self.context = self.recorder.active()
            self.context.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self.context is not None:
            self.context.__exit__(*exc)


async def _traced(recorder: tracing.Recorder | None, org: Any, items: Any) -> Any:
    """The stream's items with its trace current while each is made; the trace is written when they end."""
    failure: BaseException | None = None
    try:
        while True:
            with _active(recorder):
                try:
                    item = await items.__anext__()
                except StopAsyncIteration:
                    return
            yield item
    except BaseException as exc:
        failure = exc
        raise
    finally:
        with _active(recorder):
            await items.aclose()
        if recorder is not None and not recorder.finished:
            await asyncio.shield(_afinish_trace(recorder, org, failure))
