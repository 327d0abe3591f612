"""Fake model providers on loopback that speak their real protocols over real sockets, for tests and offline
development: anthropic.py (the Messages API) and gemini.py (generateContent). The OpenAI-compatible one is
saas/llm/fake_upstream.py. They share its conventions: `POST /_script {"model": m, "steps": [...]}` queues one
behaviour per request for a model (`{"status": 429, "retry_after": 1}`, `{"status": 500}`, `{"reply": "text"}`,
`{"tool_calls": [{"name": ..., "arguments": {...}}]}`, `{"disconnect_after": n}`), a user message starting
with `echo:` is answered with the rest of it, `GET /_requests` lists the last requests received (at most
FAKE_UPSTREAM_MAX_REQUESTS, 1,000 by default: bounded memory however long a benchmark runs), `GET /_stats`
counts them all, `POST /_reset`."""

from __future__ import annotations

import json
import os
import threading
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_REPLY = "The quick brown fox jumps over the lazy dog."

# How many received requests a fake keeps for `GET /_requests` (the oldest are dropped first). Tests read the
# last few; a benchmark's hundreds of thousands of requests would otherwise grow the process without end (841 MB
# after 100k chat calls, and garbage-collection pauses that showed up in every path's p95).
DEFAULT_MAX_REQUESTS = 1000


def max_requests_default() -> int:
    return int(os.environ.get("FAKE_UPSTREAM_MAX_REQUESTS") or DEFAULT_MAX_REQUESTS)


class FakeState:
    """What a fake remembers: scripted steps per model and the last `max_requests` requests received."""

    def __init__(self, max_requests: int | None = None) -> None:
        self.lock = threading.Lock()
        self.scripts: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
        limit = max_requests_default() if max_requests is None else max_requests
        if limit < 1:
            raise ValueError("max_requests must be at least 1")
        self.requests: deque[dict[str, Any]] = deque(maxlen=limit)
        self.requests_seen = 0  # every request received since the last reset, kept or not
        self.connections_made = 0  # TCP connections clients opened since the last reset (keep-alive shows here)

    def next_step(self, model: str) -> dict[str, Any]:
        with self.lock:
            queue = self.scripts.get(model)
            return queue.popleft() if queue else {}

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(entry)
            self.requests_seen += 1

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"requests_seen": self.requests_seen, "requests_kept": len(self.requests),
                    "max_requests": self.requests.maxlen, "connections_made": self.connections_made}  # fmt: skip

    def reset(self) -> None:
        """Back to how it started (a subclass resets its own knobs too)."""
        with self.lock:
            self.scripts.clear()
            self.requests.clear()
            self.requests_seen = 0
            self.connections_made = 0


def words(text: str) -> list[str]:
    parts = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(parts)]


def echo(text: Any) -> str:
    return text[len("echo:") :].strip() if isinstance(text, str) and text.startswith("echo:") else DEFAULT_REPLY


class _ChunkedWriter:
    """A response body in chunked transfer encoding: each write one chunk."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def write(self, data: bytes) -> int:
        if data:
            self.raw.write(b"%x\r\n%s\r\n" % (len(data), data))
        return len(data)

    def flush(self) -> None:
        self.raw.flush()

    def finish(self) -> None:
        self.raw.write(b"0\r\n\r\n")
        self.raw.flush()


class FakeHandler(BaseHTTPRequestHandler):
    """JSON and SSE plumbing and the scripting routes; subclasses answer `route(method, path, body)`."""

    server: FakeServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        state = self.server.state
        with state.lock:
            state.connections_made += 1

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def start_sse(self, *, chunked: bool = False) -> None:
        """An event stream's head. Without `chunked` the body ends when the connection closes; with it, the
        events go out in chunked transfer encoding and the connection stays open for the client's next request
        once finish_sse() ended the body (as OpenAI's API streams); a stream cut short closes it instead."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding" if chunked else "Connection", "chunked" if chunked else "close")
        self.end_headers()
        self.close_connection = True
        if chunked:
            self.wfile = _ChunkedWriter(self.wfile)  # type: ignore[assignment]

    def finish_sse(self) -> None:
        """The end of a chunked event stream: the last chunk, and the connection kept for the next request."""
        writer = self.wfile
        if isinstance(writer, _ChunkedWriter):
            writer.finish()
            self.wfile = writer.raw
            self.close_connection = False

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        return json.loads(raw or b"{}")

    def _handle(self, method: str) -> None:
        state = self.server.state
        body = self._body() if method == "POST" else {}
        if self.path == "/_script" and method == "POST":
            with state.lock:
                state.scripts[body["model"]].extend(body["steps"])
            return self.send_json(200, {"ok": True})
        if self.path == "/_reset" and method == "POST":
            state.reset()
            return self.send_json(200, {"ok": True})
        if self.path == "/_requests":
            with state.lock:
                kept = list(state.requests)
            return self.send_json(200, kept)
        if self.path == "/_stats":
            return self.send_json(200, state.stats())
        if self.control(method, self.path, body):
            return None
        if (entry := self.received(method, body)) is not None:
            state.record(entry)
        try:
            self.route(method, self.path, body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (a cancelled stream)

    def received(self, method: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The request as `GET /_requests` lists it (None: not listed)."""
        headers = {k.lower(): v for k, v in self.headers.items()}
        return {"method": method, "path": self.path, "body": body, "headers": headers}

    def control(self, method: str, path: str, body: dict[str, Any]) -> bool:
        """A fake's own control routes (not recorded as requests); True when it answered one."""
        return False

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def route(self, method: str, path: str, body: dict[str, Any]) -> None:
        raise NotImplementedError


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    prefix = ""  # what a client's base URL adds after host:port

    # A listen backlog for bursts (socketserver's default is 5): a benchmark opening 1,000 streams at once
    # would otherwise see SYN retries of 1 s and more, and measure them as the upstream's time to first token.
    request_queue_size = 1024

    def __init__(self, handler: type[FakeHandler], host: str = "127.0.0.1", port: int = 0,
                 state: FakeState | None = None) -> None:  # fmt: skip
        super().__init__((host, port), handler)
        self.state = state or FakeState()

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def base_url(self) -> str:
        return self.root_url + self.prefix

    def start_in_thread(self) -> FakeServer:
        threading.Thread(target=self.serve_forever, daemon=True, name=type(self).__name__).start()
        return self
