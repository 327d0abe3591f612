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

Several processes (WEB_PROCESSES, default: the cores this process may use, cgroup CPU limit included): one
daphne runs one event loop under one GIL, so it serves at most one core, and on a busy core websocket handshakes
queue past daphne's connect timeout while the machine's other cores idle. With WEB_PROCESSES above 1 this
process only supervises: it starts that many daphne processes (this module again, WEB_PROCESSES=1), each with a
listening socket of its own on the same address (SO_REUSEPORT), and the kernel spreads new connections over
them. Everything they share goes through PostgreSQL and Redis already (sessions, the channel layer, caches,
memo versions, breakers, rate limits). A process that dies is started again (its socket goes with it, so no
connection waits on a dead one); SIGTERM or SIGINT stops them all, each finishing as a single daphne does.
"""

import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from pprint import pformat
from typing import Any, cast
from urllib.parse import unquote

from daphne.cli import CommandLineInterface
from daphne.http_protocol import HTTPFactory, WebRequest
from daphne.server import Server
from twisted.web import http

from saas.core import heap, http_limits

DRAIN_SECONDS = 5.0  # how long a refused client's remaining bytes are read and dropped before closing
DRAIN_MAX_BYTES = 1024 * 1024  # ... or how many


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
        transport.write(http_limits.refusal(status, code, message, details))
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


def tcp_address(endpoint: str) -> tuple[str, int] | None:
    """(interface, port) of a Twisted TCP endpoint string as daphne writes it ("tcp:port=8000:interface=::1",
    colons in the address escaped), None for any other kind of endpoint."""
    kind, *parts = re.split(r"(?<!\\):", endpoint)
    if kind not in ("tcp", "tcp6"):
        return None
    options = dict(part.split("=", 1) for part in parts if "=" in part)
    return options.get("interface", "0.0.0.0").replace("\\:", ":"), int(options["port"])  # noqa: S104


def reuse_port_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A listening IPv4 socket on (host, port) that other processes of this server listen on too
    (SO_REUSEPORT): the kernel hands each new connection to one of them."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted: restart past TIME_WAIT
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _Formatted:
    """pformat's text, made only if a log line that holds it is written."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return pformat(self.value)


def _websocket_debug_lines_made_when_written() -> None:
    """autobahn builds a debug line of its ~30 settings (pprint.pformat) on every websocket connection, written or
    not: about 0.5 ms of a 3-4 ms handshake. Its module's pformat makes that text lazily instead (its timings
    table, the one other user, keeps a string)."""
    from autobahn.websocket import protocol

    if protocol.pformat is pformat:
        protocol.pformat = _Formatted  # type: ignore[assignment]
        protocol.Timings.__str__ = lambda self: pformat(self._timings)  # type: ignore[method-assign]


class LimitedServer(Server):
    endpoints: list[str]  # Twisted endpoint strings (daphne sets them in __init__)

    def run(self) -> None:
        # daphne builds its HTTP factory inside run(); it makes ours instead.
        import daphne.server

        daphne.server.HTTPFactory = LimitedHTTPFactory  # type: ignore[misc]
        http_limits.enforced_by_server()
        _websocket_debug_lines_made_when_written()
        backlog = http_limits.listen_backlog()
        self.endpoints = [with_backlog(endpoint, backlog) for endpoint in self.endpoints]
        if os.environ.get(REUSE_PORT_ENV):  # one of a supervisor's processes: a socket of its own on the port
            self.endpoints = [self._shared(endpoint, backlog) for endpoint in self.endpoints]
        heap.settle()  # the application, and with it Django, is loaded by now
        super().run()

    @staticmethod
    def _shared(endpoint: str, backlog: int) -> str:
        address = tcp_address(endpoint)
        if address is None:
            return endpoint
        # Twisted adopts a copy of the descriptor and closes this one (its fd endpoint takes IPv4 sockets only).
        return f"fd:fileno={reuse_port_socket(*address, backlog).detach()}"


class LimitedCommandLineInterface(CommandLineInterface):
    server_class = LimitedServer


# --- Several processes ----------------------------------------------------------------------------------------

PROCESSES_ENV = "WEB_PROCESSES"
REUSE_PORT_ENV = "CREWDESK_WEB_REUSE_PORT"  # set by the supervisor for its processes
QUICK_EXIT_SECONDS = 10.0  # a process that exits sooner than this after its start failed to start
QUICK_EXITS_ALLOWED = 3  # ... so many times in a row, and the supervisor gives up (a port taken, a broken config)
STOP_SECONDS = 30.0  # how long the processes have to finish after SIGTERM before they are killed


def available_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU limit (a container's)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, min(cores, math.ceil(limit)) if limit else cores)


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU limit of this process's cgroup in cores (cgroup v2 cpu.max, else v1's CFS quota), None if none."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def whole_number_from_env(name: str, unit: str) -> int | None:
    """A positive whole number of `unit` from the environment variable `name` (None when it is not set); a
    wrong value stops the server with a message naming the variable."""
    configured = os.environ.get(name, "").strip()
    if not configured:
        return None
    try:
        value = int(configured)
    except ValueError:
        sys.exit(f"{name} must be a whole number of {unit}, not {configured!r}")
    if value < 1:
        sys.exit(f"{name} must be at least 1, not {value}")
    return value


def web_processes() -> int:
    """WEB_PROCESSES, else the cores available."""
    return whole_number_from_env(PROCESSES_ENV, "processes") or available_cores()


def _die_with_parent() -> None:  # in the child, before exec: a supervisor killed outright takes its processes
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: S110  (not Linux: the processes outlive a killed supervisor)
        pass


class Supervisor:
    """Starts `processes` processes of a server (`module`: daphne here, uvicorn in saas.core.api_server) on the
    same address, restarts one that dies, stops them all."""

    def __init__(self, argv: list[str], processes: int, host: str, port: int, *, module: str = "saas.core.http_server",
                 name: str = "daphne", processes_env: str = PROCESSES_ENV) -> None:  # fmt: skip
        self.argv = argv
        self.processes = processes
        self.host, self.port = host, port
        self.module, self.name, self.processes_env = module, name, processes_env  # which server, in which variable
        self.children: dict[int, tuple[subprocess.Popen[bytes], float]] = {}  # slot -> (process, started)
        self.stopping: int | None = None  # the signal that asked us to stop
        self.quick_exits = 0
        # The processes record their metrics in prometheus_client's multiprocess files, so that a scrape of
        # /metrics, which reaches one of them, reports the counts of all (saas/core/views.py).
        self.metrics_dir = ""

    def _spawn(self, slot: int) -> None:
        env = {**os.environ, self.processes_env: "1", REUSE_PORT_ENV: "1", "CREWDESK_WEB_PROCESS": str(slot),
               "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir}  # fmt: skip
        process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", self.module, *self.argv], env=env, preexec_fn=_die_with_parent
        )  # fmt: skip
        self.children[slot] = (process, time.monotonic())

    def _check_port(self) -> None:
        """Refuse to start beside another server on the port: processes with SO_REUSEPORT would share it."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self.host, self.port))
            except OSError as exc:
                sys.exit(f"Cannot listen on {self.host}:{self.port}: {exc.strerror}")
            if self.port == 0:  # any free port: the same one for every process
                self.port = probe.getsockname()[1]
                self.argv = [*self.argv, "-p", str(self.port)]

    def _metrics_process_dead(self, pid: int) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, self.metrics_dir)  # its live gauges go; its counters stay in the sum

    def _stop(self, signum: int, frame: Any) -> None:
        self.stopping = signum

    def run(self) -> int:
        self._check_port()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        from saas.core.worker_metrics import fresh_multiprocess_dir

        self.metrics_dir = fresh_multiprocess_dir("web" if self.name == "daphne" else self.name)
        print(f"{self.name}: {self.processes} processes on {self.host}:{self.port} ({self.processes_env})", flush=True)
        for slot in range(self.processes):
            self._spawn(slot)
        code = 0
        while self.stopping is None:
            time.sleep(0.2)
            for slot, (process, started) in list(self.children.items()):
                if process.poll() is None or self.stopping is not None:
                    continue
                quick = time.monotonic() - started < QUICK_EXIT_SECONDS
                self.quick_exits = self.quick_exits + 1 if quick else 0
                print(f"{self.name} process {process.pid} exited ({process.returncode})", file=sys.stderr, flush=True)
                self._metrics_process_dead(process.pid)
                if self.quick_exits >= QUICK_EXITS_ALLOWED:
                    print(f"{self.name}: processes exit as they start; stopping", file=sys.stderr, flush=True)
                    code = process.returncode or 1
                    self.stopping = signal.SIGTERM
                    break
                self._spawn(slot)
        self._stop_children()
        return code  # 0 after SIGTERM or SIGINT, as a single daphne exits

    def _stop_children(self) -> None:
        live = [process for process, _ in self.children.values() if process.poll() is None]
        for process in live:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for process in live:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


WEBSOCKET_CONNECT_TIMEOUT_ENV = "WEBSOCKET_CONNECT_TIMEOUT"
WEBSOCKET_CONNECT_TIMEOUT = 30  # seconds, unless the environment or the command line says otherwise


def with_websocket_connect_timeout(argv: list[str]) -> list[str]:
    """daphne's arguments with a websocket connect timeout of WEBSOCKET_CONNECT_TIMEOUT seconds (30) unless they
    name one. Daphne's own default, 5 s, is both how long a socket may take to be accepted and autobahn's open
    handshake timer: when many tabs connect at once (every open tab reconnects after a deploy), the sockets at the
    back of the queue were dropped after the process had already spent CPU on them, and their reconnects queued
    again. A socket that waits is served; an HTTP request already has HTTP_REQUEST_TIMEOUT (120 s) to arrive."""
    if any(arg == "--websocket_connect_timeout" or arg.startswith("--websocket_connect_timeout=") for arg in argv):
        return argv
    seconds = whole_number_from_env(WEBSOCKET_CONNECT_TIMEOUT_ENV, "seconds") or WEBSOCKET_CONNECT_TIMEOUT
    return ["--websocket_connect_timeout", str(seconds), *argv]


def main(argv: list[str] | None = None) -> int:
    argv = with_websocket_connect_timeout(sys.argv[1:] if argv is None else argv)
    processes = web_processes()
    if processes > 1:
        from daphne.cli import DEFAULT_HOST, DEFAULT_PORT

        args = LimitedCommandLineInterface().parser.parse_args(argv)
        host = args.host or DEFAULT_HOST
        port = DEFAULT_PORT if args.port is None else args.port
        if args.unix_socket or args.file_descriptor is not None or args.socket_strings or ":" in host:
            print("daphne: one process (WEB_PROCESSES > 1 needs an IPv4 address and port)", file=sys.stderr)
        else:
            return Supervisor(argv, processes, host, port).run()
    LimitedCommandLineInterface().run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
