"""The API server: uvicorn (httptools, uvloop) serving the HTTP API beside daphne.

    python -m saas.core.api_server -b 0.0.0.0 -p 8001 [saas.asgi:application]

Why a second server (#19): a gateway call spent about 1.3 of its 6 ms of CPU in Twisted and daphne, and an open
stream's every chunk went through them too. The same application behind uvicorn with httptools and uvloop,
measured side by side (bench/quick_cpu.py --server, bench/streams.py --server): 4.4-5.1 against 6.0-6.7 ms of CPU
per call at 32 clients, and 1,000 SSE streams ramped in at 50/s reach their first token at p95 1.33x direct
against 3.57x on one process each. Browser pages and websockets stay on daphne (saas.core.http_server), where
Channels serves the websockets: this server refuses to upgrade a connection (`ws="none"`, the request gets the
application's 404). Developers point their clients at it (make run: port 8001; deploy/: the ingress sends /v1/
and /api/ to it); every route answers on both.

The limits are daphne's (saas.core.http_server), enforced where the bytes arrive, in the same JSON error shape:
- a request must arrive in full (request line, headers, body) within HTTP_REQUEST_TIMEOUT seconds of its first
  byte, else 408;
- a declared Content-Length over the route's limit (saas.core.http_limits.body_limit) is answered 413 as soon as
  the headers are in; a chunked body is counted as it arrives and answered 413 at the limit;
- request line and headers over HEAD_MAX_BYTES (Twisted's limit under daphne) get 431; a request httptools
  cannot parse gets 400.
After such an answer the connection reads no further request: what the client still sends is read and dropped for
a few seconds (so that it sees the answer instead of a reset), then the connection is closed. A connection
that waits for its next request, or has not sent its first, is closed after HTTP_KEEP_ALIVE_TIMEOUT seconds.

Several processes (API_PROCESSES, default: the cores this process may use) share the port as daphne's do
(SO_REUSEPORT, the same supervisor: saas.core.http_server.Supervisor).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any
from urllib.parse import unquote

import httptools
import uvicorn
from uvicorn.importer import import_from_string
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from saas.core import heap, http_limits
from saas.core.http_server import (
    DRAIN_MAX_BYTES,
    DRAIN_SECONDS,
    REUSE_PORT_ENV,
    STOP_SECONDS,
    Supervisor,
    available_cores,
    reuse_port_socket,
    whole_number_from_env,
)

PROCESSES_ENV = "API_PROCESSES"
DEFAULT_PORT = 8001
HEAD_MAX_BYTES = 16 * 1024  # request line and headers: Twisted's totalHeadersSize, so both servers take the same


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """One client connection: the request deadline, the head and body limits, and refusing a request."""

    refused = False
    _deadline: asyncio.TimerHandle | None = None
    _drain: asyncio.TimerHandle | None = None
    _drained = 0
    _head_bytes = 0
    _body_limit = 0
    _body_received = 0
    _receiving: RequestResponseCycle | None = None  # the cycle of the request being received, once it has one
    _before: RequestResponseCycle | None = None  # the connection's previous request, perhaps still being answered

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never sends a request is closed as an idle kept-alive one is (uvicorn arms that
        # timer only after a response); the first byte disarms it, and the request deadline takes over.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            self._discard(data)
            return
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        if self._drain is not None:
            self._drain.cancel()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self.refuse(400, "malformed_request", "The request is not valid HTTP/1.1.")

    # Parser callbacks: each does nothing once the request is refused (the rest of the data fed is dropped).
    def on_message_begin(self) -> None:
        if self.refused:
            return
        self._before, self._receiving = self.cycle, None
        self._head_bytes = self._body_received = 0
        self._deadline = self.loop.call_later(http_limits.request_timeout(), self._too_slow)
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        if not self.refused and self._head_fits(len(url)):
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.refused and self._head_fits(len(name) + len(value) + 4):
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self.refused:
            return
        method = self.parser.get_method().decode("ascii", "replace")
        path = httptools.parse_url(self.url).path.decode("latin-1")
        self._body_limit = http_limits.body_limit(method, _unquoted(path))
        declared = _content_length(self.headers)
        if declared is not None and declared > self._body_limit:
            limit = self._body_limit
            self.refuse(413, "too_large", http_limits.too_large_message(limit, declared), {"limit": limit})
            return
        super().on_headers_complete()
        self._receiving = self.cycle

    def on_body(self, body: bytes) -> None:
        if self.refused:
            return
        self._body_received += len(body)
        if self._body_received > self._body_limit:
            limit = self._body_limit
            self.refuse(413, "too_large", http_limits.too_large_message(limit), {"limit": limit})
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self.refused:
            return
        self._cancel_deadline()  # the request is in; the application may take its time to answer
        super().on_message_complete()

    def _head_fits(self, size: int) -> bool:
        self._head_bytes += size
        if self._head_bytes <= HEAD_MAX_BYTES:
            return True
        self.refuse(431, "headers_too_large", f"The request line and headers are over {HEAD_MAX_BYTES} bytes.",
                    {"limit": HEAD_MAX_BYTES})  # fmt: skip
        return False

    def _too_slow(self) -> None:
        self._deadline = None
        self.refuse(408, "request_timeout", http_limits.timeout_message())

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def refuse(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        """Answer the request being received with an error, read no further request, then close."""
        if self.refused or self.transport is None or self.transport.is_closing():
            return
        self.refused = True
        self._cancel_deadline()
        self._unset_keepalive_if_required()
        cycle = self._receiving
        if cycle is not None and not cycle.response_complete:
            # The application has the request: it now receives a disconnect, and whatever it sends is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        answered = cycle is not None and cycle.response_started
        previous_unfinished = self._before is not None and not self._before.response_complete
        if answered or previous_unfinished:
            self.transport.close()  # an answer is on the wire already: ours cannot follow it
            return
        self.transport.write(http_limits.refusal(status, code, message, details))
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the answer, then end of stream; the client closes, or the drain timer does
        else:
            self.transport.close()
        self.flow.resume_reading()  # a paused connection would never read (and drop) what the client still sends
        self._drain = self.loop.call_later(DRAIN_SECONDS, self.transport.abort)

    def _discard(self, data: bytes) -> None:
        self._drained += len(data)
        if self._drained > DRAIN_MAX_BYTES:
            self.transport.abort()


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.strip().isdigit() else None  # httptools refuses a malformed one itself
    return None


def _unquoted(path: str) -> str:
    return unquote(path) if "%" in path else path


def api_processes() -> int:
    """API_PROCESSES, else the cores available."""
    return whole_number_from_env(PROCESSES_ENV, "processes") or available_cores()


def serve(app: str, host: str, port: int, *, shared_port: bool) -> None:
    """One uvicorn process; with `shared_port`, on a socket of its own beside its supervisor's other processes."""
    http_limits.enforced_by_server()  # BodyLimitMiddleware steps aside: the protocol has checked every request
    backlog = http_limits.listen_backlog()
    application = import_from_string(app)  # loaded here, so the heap settles before the first request
    heap.settle()
    config = uvicorn.Config(
        application, host=host, port=port, http=LimitedHttpToolsProtocol, loop="uvloop", ws="none", lifespan="off",
        # Client addresses behind proxies are saas.core.client_ip's (TRUSTED_PROXIES), as under daphne.
        proxy_headers=False, server_header=False, access_log=False, log_config=None, backlog=backlog,
        timeout_keep_alive=http_limits.keep_alive_timeout(), timeout_graceful_shutdown=int(STOP_SECONDS),
    )  # fmt: skip
    server = uvicorn.Server(config)
    server.run(sockets=[reuse_port_socket(host, port, backlog)] if shared_port else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m saas.core.api_server", description=__doc__.splitlines()[0])
    parser.add_argument("-b", "--bind", default="127.0.0.1", help="the IPv4 address to listen on")
    parser.add_argument("-p", "--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("application", nargs="?", default="saas.asgi:application")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if os.environ.get(REUSE_PORT_ENV):  # one of a supervisor's processes
        serve(args.application, args.bind, args.port, shared_port=True)
        return 0
    processes = api_processes()
    if processes > 1:
        argv_out = ["-b", args.bind, "-p", str(args.port), args.application]
        supervisor = Supervisor(argv_out, processes, args.bind, args.port, module="saas.core.api_server",
                                name="uvicorn", processes_env=PROCESSES_ENV)  # fmt: skip
        return supervisor.run()
    serve(args.application, args.bind, args.port, shared_port=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
