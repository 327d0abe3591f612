"""daphne, with request bodies limited where their bytes arrive.

Twisted (under daphne) reads a request's whole body, into memory or a temporary file, before the application
sees its first byte, and gives a client as long as it likes provided it sends a byte now and then. So an ASGI
middleware alone is too late for either. Here, in the same process and with daphne's own options:

- a declared Content-Length over the route's limit (saas.core.http_limits.body_limit) is answered 413 as soon as
  the headers are in, before any of the body is read; a chunked body is counted as it arrives and answered 413
  at the limit;
- a request must arrive in full (request line, headers, body) within HTTP_REQUEST_TIMEOUT seconds of its first
  byte, else 408: a declared body that never comes, or comes a byte at a time, no longer holds a connection.

After such an answer the connection stops reading requests: what the client still sends is read and dropped for
a few seconds (so that it sees the answer instead of a reset), then the connection is closed.

    python -m saas.core.http_server -b 0.0.0.0 -p 8000 saas.asgi:application   (any of daphne's arguments)
"""

from typing import Any, cast
from urllib.parse import unquote

from daphne.cli import CommandLineInterface
from daphne.http_protocol import HTTPFactory, WebRequest
from daphne.server import Server
from twisted.web import http

from saas.core import http_limits

DRAIN_SECONDS = 5.0  # how long a refused client's remaining bytes are read and dropped before closing
DRAIN_MAX_BYTES = 1024 * 1024  # ... or how many
_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 413: b"Content Too Large"}


class LimitedHTTPChannel(http.HTTPChannel):
    """One client connection: the request deadline, and refusing a request before the application sees it."""

    # Twisted's interfaces (zope) do not type-check well: timers and the transport are Any here.
    _deadline: Any = None
    _drain: Any = None
    refused = False
    _drained = 0

    def dataReceived(self, data: bytes) -> None:
        if self._deadline is None and not self._handlingRequest and data:
            # The first byte of a request: all of it must be in by the deadline.
            self._deadline = self.callLater(http_limits.request_timeout(), self._too_slow)
        super().dataReceived(data)

    def allContentReceived(self) -> None:
        self._cancel_deadline()  # the request is in; the application may take its time to answer
        super().allContentReceived()

    def connectionLost(self, reason: Any = None) -> None:
        self._cancel_deadline()
        if self._drain is not None and self._drain.active():
            self._drain.cancel()
        super().connectionLost(reason)

    def _send100Continue(self) -> None:
        if not self.refused:  # Twisted asks for the body after gotLength, which may have refused it
            super()._send100Continue()

    def _too_slow(self) -> None:
        self._deadline = None
        self.refuse(408, "request_timeout", http_limits.timeout_message())

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def refuse(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        """Answer the request being received with an error, read no further request, then close."""
        transport: Any = self.transport
        if self.refused or transport is None:
            return
        self.refused = True
        self._cancel_deadline()
        self.setTimeout(None)
        body, request_id = http_limits.error_json(code, message, details)
        head = [
            b"HTTP/1.1 %d %s" % (status, _REASONS[status]),
            b"Content-Type: application/json",
            b"Content-Length: %d" % len(body),
            b"X-Request-ID: " + request_id.encode(),
            b"Connection: close",
        ]
        transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.dataReceived = self._discard  # type: ignore[method-assign]
        lose_write = getattr(transport, "loseWriteConnection", None)
        if lose_write is not None:
            lose_write()  # the answer, then end of stream; the client closes, or the drain timer does
        else:
            transport.loseConnection()
        self._drain = self.callLater(DRAIN_SECONDS, transport.abortConnection)

    def _discard(self, data: bytes) -> None:
        self._drained += len(data)
        if self._drained > DRAIN_MAX_BYTES and self.transport is not None:
            self.transport.abortConnection()


class LimitedWebRequest(WebRequest):
    """daphne's request, with the body limit of its route checked from the headers and while the body arrives."""

    channel: LimitedHTTPChannel
    body_limit = 0
    body_received = 0

    def gotLength(self, length: int | None) -> None:
        channel = self.channel
        target = cast(bytes, channel._path)  # the request target as sent (Twisted's annotation is wrong)
        self.body_limit = http_limits.body_limit(channel._command.decode("latin-1"), _path(target))
        too_large = length is not None and length > self.body_limit
        super().gotLength(0 if too_large else length)  # a refused body gets an empty buffer, not a temporary file
        if too_large:
            channel.refuse(
                413, "too_large", http_limits.too_large_message(self.body_limit, length), {"limit": self.body_limit}
            )

    def handleContentChunk(self, data: bytes) -> None:
        if self.channel.refused:
            return
        self.body_received += len(data)
        if self.body_received > self.body_limit:
            limit = self.body_limit
            self.channel.refuse(413, "too_large", http_limits.too_large_message(limit), {"limit": limit})
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.channel.refused:
            return  # answered already; the application never sees it
        super().requestReceived(command, path, version)


def _path(target: bytes) -> str:
    return unquote(target.split(b"?", 1)[0].decode("latin-1"))


def _channel_factory(factory: HTTPFactory) -> Any:
    # Twisted's own factory wraps its channel to negotiate HTTP/2; ours wraps the limited channel the same way.
    return http._GenericHTTPChannelProtocol(LimitedHTTPChannel())


class LimitedHTTPFactory(HTTPFactory):
    protocol = _channel_factory

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        if protocol is not None:
            protocol.requestFactory = LimitedWebRequest
        return protocol


def with_backlog(endpoint: str, backlog: int) -> str:
    """A TCP endpoint with a listen queue of `backlog` connections (Twisted's default, 50, overflows when a
    burst of clients connects while the event loop is busy, and the kernel then drops or resets them)."""
    if endpoint.startswith("tcp:") and ":backlog=" not in endpoint:
        return f"{endpoint}:backlog={backlog}"
    return endpoint


class LimitedServer(Server):
    def run(self) -> None:
        # daphne builds its HTTP factory inside run(); it makes ours instead.
        import daphne.server

        daphne.server.HTTPFactory = LimitedHTTPFactory  # type: ignore[misc]
        self.endpoints = [with_backlog(endpoint, http_limits.listen_backlog()) for endpoint in self.endpoints]
        super().run()


class LimitedCommandLineInterface(CommandLineInterface):
    server_class = LimitedServer


if __name__ == "__main__":
    LimitedCommandLineInterface.entrypoint()
