"""WEB_PROCESSES: several daphne processes on one port (saas/core/http_server.py). Each has a listening socket of
its own (SO_REUSEPORT) and the kernel spreads connections over them; a process that dies is replaced; stopping
the supervisor stops them all; a port another server holds is refused instead of shared."""

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from saas.core import http_server
from tests.conftest import BASE_DIR, LiveServer, running_daphne, subprocess_env

WAIT = 60


# --- Without a server ----------------------------------------------------------------------------------------


def test_the_cgroup_cpu_limit_caps_the_processes(tmp_path, monkeypatch):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert http_server.cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert http_server.cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert http_server.cgroup_cpu_limit(tmp_path) == 0.5

    monkeypatch.setattr(http_server, "cgroup_cpu_limit", lambda: 1.5)
    monkeypatch.setattr(http_server.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert http_server.available_cores() == 2  # a pod limited to 1.5 cores on a 16-core node: two processes
    monkeypatch.setattr(http_server, "cgroup_cpu_limit", lambda: 0.5)
    assert http_server.available_cores() == 1
    monkeypatch.setattr(http_server, "cgroup_cpu_limit", lambda: None)
    assert http_server.available_cores() == 16


def test_web_processes_defaults_to_the_cores_and_is_checked(monkeypatch):
    monkeypatch.setattr(http_server, "available_cores", lambda: 3)
    monkeypatch.delenv("WEB_PROCESSES", raising=False)
    assert http_server.web_processes() == 3
    monkeypatch.setenv("WEB_PROCESSES", "1")
    assert http_server.web_processes() == 1
    for wrong in ("0", "two"):
        monkeypatch.setenv("WEB_PROCESSES", wrong)
        with pytest.raises(SystemExit, match="WEB_PROCESSES"):
            http_server.web_processes()


def test_websockets_have_30_seconds_to_connect_unless_told_otherwise(monkeypatch):
    """daphne's 5 s dropped the sockets at the back of a burst of connections (tabs reconnecting after a deploy)
    after their CPU was spent: the server gives them 30 s, the environment or the command line may say otherwise,
    and the daphne server gets it both as its connect timeout and as autobahn's open-handshake timer."""
    built = []
    monkeypatch.setattr(http_server.LimitedServer, "run", lambda self: built.append(self))
    monkeypatch.setattr(http_server, "web_processes", lambda: 1)
    monkeypatch.delenv("WEBSOCKET_CONNECT_TIMEOUT", raising=False)
    app = ["-b", "127.0.0.1", "-p", "0", "saas.asgi:application"]
    http_server.main(app)
    assert (built[-1].websocket_connect_timeout, built[-1].websocket_handshake_timeout) == (30, 30)
    monkeypatch.setenv("WEBSOCKET_CONNECT_TIMEOUT", "12")
    http_server.main(app)
    assert (built[-1].websocket_connect_timeout, built[-1].websocket_handshake_timeout) == (12, 12)
    http_server.main(["--websocket_connect_timeout", "7", *app])
    assert built[-1].websocket_connect_timeout == 7
    for wrong in ("0", "soon"):
        monkeypatch.setenv("WEBSOCKET_CONNECT_TIMEOUT", wrong)
        with pytest.raises(SystemExit, match="WEBSOCKET_CONNECT_TIMEOUT"):
            http_server.main(app)


def test_tcp_endpoints_are_read_as_daphne_writes_them():
    assert http_server.tcp_address("tcp:port=8000:interface=10.0.0.5:backlog=1024") == ("10.0.0.5", 8000)
    assert http_server.tcp_address(r"tcp:port=8000:interface=\:\:1") == ("::1", 8000)
    assert http_server.tcp_address("unix:/tmp/daphne.sock") is None


def test_a_port_another_server_holds_is_refused_not_shared():
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # it would let our processes join it
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        finished = subprocess.run(
            [sys.executable, "-m", "saas.core.http_server", "-b", "127.0.0.1", "-p", str(port),
             "saas.asgi:application"],
            cwd=BASE_DIR, env=subprocess_env(WEB_PROCESSES="2"), capture_output=True, text=True, timeout=WAIT,
        )  # fmt: skip
    assert finished.returncode != 0
    assert f"Cannot listen on 127.0.0.1:{port}" in finished.stderr


# --- Two processes serving ----------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["daphne", "api"])
def two(request, django_db_setup, tmp_path_factory, fake_server) -> Iterator[LiveServer]:
    """Two processes of daphne (WEB_PROCESSES) or of the API server (API_PROCESSES), under the one supervisor."""
    with running_daphne(tmp_path_factory.mktemp("two"), fake_server, server_kind=request.param, WEB_PROCESSES="2",
                        API_PROCESSES="2") as live:  # fmt: skip
        yield live


def _listeners(server: LiveServer) -> dict[int, psutil.Process]:
    """The supervisor's processes that listen on the server's port, by pid."""
    found = {}
    for child in psutil.Process(server.process.process.pid).children():
        try:
            if any(c.laddr.port == server.port and c.status == psutil.CONN_LISTEN for c in child.net_connections()):
                found[child.pid] = child
        except psutil.Error:
            continue
    return found


def _wait_for_listeners(
    server: LiveServer, count: int, *, other_than: frozenset[int] = frozenset()
) -> dict[int, psutil.Process]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = _listeners(server)
        if len(found) == count and not other_than & found.keys():
            return found
        time.sleep(0.3)
    raise AssertionError(f"{count} listening processes expected, found {sorted(_listeners(server))}")


def _serving_pid(server: LiveServer, listeners: dict[int, psutil.Process]) -> tuple[int, bytes]:
    """One request on a new connection, kept open; the pid of the process whose socket is its other end."""
    sock = socket.create_connection((server.host, server.port), timeout=WAIT)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = sock.recv(65536)
        here = sock.getsockname()
        for pid, process in listeners.items():
            if any(c.raddr and tuple(c.raddr) == here for c in process.net_connections(kind="tcp")):
                return pid, answer
        raise AssertionError(f"no listening process holds the connection from {here}")
    finally:
        sock.close()


def test_two_processes_share_the_port_and_both_serve(two):
    listeners = _wait_for_listeners(two, 2)
    served: dict[int, int] = {}
    for _ in range(40):  # the kernel picks a socket by the connection's addresses: both get some of 40
        pid, answer = _serving_pid(two, listeners)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        served[pid] = served.get(pid, 0) + 1
    assert set(served) == set(listeners), served


def test_a_process_that_dies_is_replaced_and_the_port_keeps_serving(two):
    listeners = _wait_for_listeners(two, 2)
    victim = next(iter(listeners.values()))
    victim.send_signal(signal.SIGKILL)
    victim.wait(WAIT)
    replaced = _wait_for_listeners(two, 2, other_than=frozenset({victim.pid}))
    for _ in range(20):  # no connection is handed to the dead process's socket
        _pid, answer = _serving_pid(two, replaced)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


@pytest.mark.parametrize("kind", ["daphne", "api"])
def test_stopping_the_supervisor_stops_every_process(django_db_setup, tmp_path, fake_server, kind):
    with running_daphne(tmp_path, fake_server, server_kind=kind, WEB_PROCESSES="2", API_PROCESSES="2") as live:
        listeners = _wait_for_listeners(live, 2)
        live.process.process.send_signal(signal.SIGTERM)
        assert live.process.process.wait(WAIT) == 0  # stopped cleanly, as a single daphne exits
        _gone, alive = psutil.wait_procs(list(listeners.values()), timeout=WAIT)
        assert not alive
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", live.port)) != 0  # nothing listens any more


def test_one_process_is_a_plain_daphne(daphne_server):
    """WEB_PROCESSES=1 (the tests' default): no supervisor, the process itself serves."""
    process = psutil.Process(daphne_server.process.process.pid)
    assert any(c.laddr.port == daphne_server.port for c in process.net_connections())
    assert not process.children()


def test_a_scrape_reaching_either_process_counts_the_requests_of_both(two):
    listeners = _wait_for_listeners(two, 2)
    served = {_serving_pid(two, listeners)[0] for _ in range(40)}
    assert served == set(listeners)

    def requests_counted() -> float:
        response = httpx.get(two.url + "/metrics", timeout=WAIT)
        assert response.status_code == 200
        return sum(sample.value for family in text_string_to_metric_families(response.text)
                   if family.name == "crewdesk_django_http_requests_total_by_method" for sample in family.samples
                   if sample.name.endswith("_total") and sample.labels.get("method") == "GET")  # fmt: skip

    # Each process alone has served only part of the 40; a scrape sees all of them, whichever process answers.
    for _ in range(6):
        assert requests_counted() >= 40
