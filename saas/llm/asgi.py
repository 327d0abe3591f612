"""The ASGI route of the gateway's hot endpoints: `POST /v1/chat/completions` and `POST /v1/embeddings` go to
the async views (saas/llm/api_async.py) on the event loop; every other request goes on to Django.

Why in front of Django: Django's handler (saas/core/asgi.py) runs a request's middleware and view in a worker
thread of its own for the whole request, which is what an async view needs to avoid (a thread per open stream,
a hop per chunk). Here a request costs no thread of its own: its admission runs on the loop (saas.core.on_loop)
and its few steps on the database hop to the gateway's pool (saas.core.threads.hop) and give the thread back.

What the middleware does for these endpoints is done here: the request id (django_guid: read from X-Request-ID
or made, sent back, in every log line and ledger row), the security headers of SecurityMiddleware,
CSPMiddleware, PermissionsPolicyMiddleware and XFrameOptionsMiddleware (the same headers as every other
response). Sessions, CSRF, messages, allauth and the org middleware have nothing to do on an API-key endpoint
(the DRF view enters the org scope itself, as on the sync path); request counts by view are not in
django_prometheus's HTTP metrics (the gateway's own `crewdesk_llm_*` metrics count every call).

As on the sync path, a client that hangs up before its (non-streaming) answer does not cancel the call: it is
completed, recorded, and its response closed. A stream whose client goes away is cancelled (the upstream
connection closed) and recorded as cancelled.

`LLM_ASYNC_GATEWAY=false` sends these endpoints to Django's synchronous views instead (saas/llm/api.py), which
also serve them under Django's test client and any WSGI server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from csp.constants import HEADER, HEADER_REPORT_ONLY
from csp.middleware import CheckableLazyObject, CSPMiddleware
from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.exception import response_for_exception
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import set_script_prefix
from django_guid.middleware import process_incoming_request, process_outgoing_request
from django_permissions_policy import PermissionsPolicyMiddleware

from saas.core import threads

ROUTES = {"/v1/chat/completions": "chat_completions", "/v1/embeddings": "embeddings"}  # views of api_async
# The gateway's modules are imported on the first request, as Django imports the URLconf: a server starts as fast.
_abandoned: set[asyncio.Future[Any]] = set()


def enabled() -> bool:
    """On unless LLM_ASYNC_GATEWAY (a setting, else the environment variable) says false."""
    value = getattr(settings, "LLM_ASYNC_GATEWAY", None)
    if value is None:
        value = os.environ.get("LLM_ASYNC_GATEWAY", "true").lower() not in ("0", "false", "no", "off")
    return bool(value)


# What a view may set on a response to change its policy (django-csp's decorators): such a response is left to
# CSPMiddleware itself.
_CSP_OVERRIDES = ("_csp_config", "_csp_update", "_csp_replace", "_csp_exempt", "_csp_config_ro", "_csp_update_ro",
                  "_csp_replace_ro", "_csp_exempt_ro")  # fmt: skip


class _SettledCSP(CSPMiddleware):
    """CSPMiddleware for the gateway's responses, whose policy follows from the settings alone (no view sets its
    own and none uses a nonce: an API response holds no HTML), so its headers are built once per settings, path
    and kind of status (django-csp leaves 404 and 500 alone under DEBUG) and then copied."""

    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)
        self._built: dict[tuple[Any, ...], list[tuple[str, str]]] = {}

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if getattr(request, "_csp_nonce", None) is not None or any(hasattr(response, a) for a in _CSP_OVERRIDES):
            return super().process_response(request, response)  # type: ignore[no-any-return]
        key = (id(getattr(settings, "CONTENT_SECURITY_POLICY", None)),
               id(getattr(settings, "CONTENT_SECURITY_POLICY_REPORT_ONLY", None)), settings.DEBUG,
               response.status_code in (404, 500), request.path_info)  # fmt: skip
        headers = self._built.get(key)
        if headers is None:
            blank = super().process_response(request, HttpResponse(status=response.status_code))
            headers = self._built[key] = [(h, blank[h]) for h in (HEADER, HEADER_REPORT_ONLY) if blank.has_header(h)]
        for header, value in headers:
            if not response.has_header(header):
                response[header] = value
        self._after(request)
        return response

    def _after(self, request: HttpRequest) -> None:
        # As process_response ends: a nonce asked for after the header was written is an error, not a silent miss.
        if getattr(request, "_csp_nonce", None) is None:
            request.csp_nonce = CheckableLazyObject(self._csp_nonce_post_response)  # type: ignore[attr-defined]


class GatewayHandler(ASGIHandler):
    """Django's ASGI request handling (body, request object, disconnects, sending, closing) around one of
    ROUTES, without the middleware chain or a request thread."""

    def load_middleware(self, is_async: bool = False) -> None:
        def nothing(request: HttpRequest) -> HttpResponseBase:
            raise AssertionError("only the middleware's request and response hooks are used here")

        self._security = SecurityMiddleware(nothing)
        self._policy = _SettledCSP(nothing)
        self._permissions = PermissionsPolicyMiddleware(nothing)
        self._frames = XFrameOptionsMiddleware(nothing)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        with threads.own_threads():
            await self.handle(scope, receive, send)

    async def handle(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            assert error_response is not None  # Django's create_request gives one or the other
            body_file.close()
            await self.send_response(error_response, send)
            await threads.hop(error_response.close)
            return

        try:
            response = await self._respond(request)
        except asyncio.CancelledError:
            body_file.close()  # daphne gave up on a client gone for long: the view finishes on its own
            raise
        try:
            if response.streaming:
                await self._send_streaming(response, receive, send)
            else:
                # Sent to a client that went away meanwhile, the answer is dropped by the server: the call was
                # completed and recorded either way, so a non-streaming request needs no disconnect listener.
                await self.send_response(response, send)
        except asyncio.CancelledError:
            _keep(asyncio.ensure_future(_close(response)))  # its after-send work (the trace) still runs
            body_file.close()
            raise
        await _close(response)
        body_file.close()

    async def _send_streaming(self, response: HttpResponseBase, receive: Any, send: Any) -> None:
        """A stream is sent while listening for the client going away, which cancels the sending (and so
        closes the upstream stream, recorded as cancelled)."""
        listening = asyncio.create_task(self.listen_for_disconnect(receive))
        sending = asyncio.create_task(self.send_response(response, send))
        tasks: list[asyncio.Task[Any]] = [listening, sending]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                with contextlib.suppress(RequestAborted, asyncio.CancelledError):
                    task.result()
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _respond(self, request: HttpRequest) -> HttpResponseBase:
        """The view's response; a client that hangs up meanwhile leaves the view to finish (see the module)."""
        work = asyncio.ensure_future(self._view(request))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            _abandoned.add(work)
            work.add_done_callback(_close_abandoned)
            raise

    async def _view(self, request: HttpRequest) -> HttpResponseBase:
        from saas.llm import api_async

        process_incoming_request(request)
        self._policy.process_request(request)
        try:
            response = await getattr(api_async, ROUTES[request.path_info])(request)
        except Exception as exc:
            response = await threads.hop(response_for_exception, request, exc)
        if not response.streaming and not response.has_header("Content-Length"):
            response["Content-Length"] = str(len(response.content))  # type: ignore[attr-defined]
        process_outgoing_request(response, request)
        self._security.process_response(request, response)  # type: ignore[arg-type]
        self._policy.process_response(request, response)  # type: ignore[arg-type]
        self._permissions._apply_headers(response)
        self._frames.process_response(request, response)  # type: ignore[arg-type]
        response._handler_class = type(self)  # type: ignore[attr-defined]
        return response


async def _close(response: HttpResponseBase) -> None:
    """Close a sent response: its after-send work (saas.core.responses) in a hop; without any, on the loop, where
    request_finished's receivers have nothing of this request's to close (its database connections were given
    back after each hop; the request id and urlconf are this task's context), so a call costs no hop for it."""
    if response._resource_closers:  # type: ignore[attr-defined]
        await threads.hop(response.close)
    else:
        response.close()


def _close_abandoned(work: asyncio.Future[Any]) -> None:
    _abandoned.discard(work)
    if work.cancelled() or work.exception() is not None:
        return
    _keep(asyncio.ensure_future(_close(work.result())))


def _keep(closing: asyncio.Future[Any]) -> None:
    """A closing that outlives its request, held until done (the loop keeps only weak references)."""
    _abandoned.add(closing)
    closing.add_done_callback(_abandoned.discard)


class GatewayRoute:
    """ASGI middleware: ROUTES' POSTs to GatewayHandler, the rest to `app`."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.handler: GatewayHandler | None = None
        self.enabled: bool | None = None  # read at the first request (the settings are ready then)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.enabled is None:
            self.enabled = enabled()
        if self.enabled and scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in ROUTES:
            if self.handler is None:
                self.handler = GatewayHandler()
            await self.handler(scope, receive, send)
            return
        await self.app(scope, receive, send)
