"""Request bodies are limited where their bytes arrive: each real server (daphne through our entry point, and the
API server, uvicorn), spoken to over raw sockets, refuses an oversized body before reading it and drops a request
that does not arrive in time."""

import json
import select
import socket
import time
from collections.abc import Iterator

import pytest
import requests

from documents.models import Document
from tests.accounts.conftest import issue_key
from tests.accounts.factories import OrganizationFactory
from tests.conftest import LiveServer, running_daphne

pytestmark = [pytest.mark.live]

REQUEST_TIMEOUT = 2  # seconds, for this server only: the time a client has to send a whole request
KEEP_ALIVE = REQUEST_TIMEOUT + 3  # seconds the API server keeps a connection waiting for a request
WAIT = 30  # how long the tests wait for an answer before calling it a hang


@pytest.fixture(scope="module", params=["daphne", "api"])
def server(request, django_db_setup, tmp_path_factory, fake_server) -> Iterator[LiveServer]:
    with running_daphne(
        tmp_path_factory.mktemp("limits"), fake_server, server_kind=request.param,
        HTTP_REQUEST_TIMEOUT=str(REQUEST_TIMEOUT), HTTP_KEEP_ALIVE_TIMEOUT=str(KEEP_ALIVE),
    ) as live:  # fmt: skip
        yield live


def _connect(server: LiveServer) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=WAIT)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a hang fails on the socket's timeout)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _read_one(sock: socket.socket) -> bytes:
    """One whole response on a kept-alive connection: its head, then Content-Length bytes of body (a server may
    send them in separate writes, so one recv can return the head alone)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before a whole response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(_parse(head + b"\r\n\r\n")[1].get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before a whole response: {data!r}"
        body += chunk
    return head + b"\r\n\r\n" + body


def _parse(raw: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return status, headers, json.loads(body) if body else {}


def _head(method: str, path: str, *headers: str) -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode()


@pytest.mark.parametrize(
    ("path", "content_type", "limit"),
    [
        ("/api/v1/documents", "multipart/form-data; boundary=x", 20 * 1024 * 1024 + 64 * 1024),  # the upload
        ("/api/v1/ask", "application/json", 1024 * 1024),  # the API
        ("/v1/chat/completions", "application/json", 1024 * 1024),  # the OpenAI-compatible API
        ("/accounts/login/", "application/x-www-form-urlencoded", 2_621_440),  # an anonymous browser form
    ],
)
def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(server, path, content_type, limit):
    with _connect(server) as sock:
        sock.sendall(_head("POST", path, f"Content-Type: {content_type}", f"Content-Length: {200 * 1024 * 1024}"))
        status, headers, body = _parse(_read_all(sock))  # not one byte of the body was sent
    assert status == 413
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert body["error"]["code"] == "too_large"
    assert body["error"]["details"] == {"limit": limit}
    assert body["error"]["request_id"] == headers["x-request-id"]


def test_a_client_that_asks_before_sending_is_told_no_and_not_to_go_ahead(server):
    """curl sends `Expect: 100-continue` before a large body: it gets the 413 and never a 100 Continue."""
    with _connect(server) as sock:
        sock.sendall(_head("POST", "/api/v1/ask", "Expect: 100-continue", f"Content-Length: {30 * 1024 * 1024}"))
        raw = _read_all(sock)
    assert raw.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in raw


def test_a_chunked_body_over_the_limit_is_cut_off_at_the_limit(server):
    with _connect(server) as sock:
        sock.sendall(_head("POST", "/api/v1/ask", "Content-Type: application/json", "Transfer-Encoding: chunked"))
        chunk = b"x" * 65536
        sent = 0
        try:
            for _ in range(64):  # 4 MiB, four times the API's limit
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped listening: what it answered is still there to read
        status, _, body = _parse(_read_all(sock))
    assert status == 413
    assert body["error"]["code"] == "too_large" and body["error"]["details"] == {"limit": 1024 * 1024}


def test_a_declared_body_that_never_arrives_times_out_and_frees_the_connection(server):
    with _connect(server) as sock:
        sock.sendall(_head("POST", "/api/v1/ask", "Content-Type: application/json", "Content-Length: 500000"))
        sock.sendall(b'{"question": ')  # and then nothing
        status, headers, body = _parse(_read_all(sock))  # the server answers, then closes
    assert status == 408
    assert headers["connection"] == "close"
    assert body["error"]["code"] == "request_timeout"


def test_a_request_sent_a_byte_at_a_time_times_out(server):
    """Slowloris: each byte resets an idle timer, but not the deadline for the whole request."""
    with _connect(server) as sock:
        request = _head("GET", "/healthz", *(f"X-Slow-{i}: {'y' * 20}" for i in range(200)))
        answered = False
        for byte in request:  # far more bytes than fit in the deadline at this pace
            sock.sendall(bytes([byte]))
            if select.select([sock], [], [], 0.05)[0]:
                answered = True
                break
        assert answered, "the server took the whole request however slowly it came"
        status, _, body = _parse(_read_all(sock))
    assert status == 408 and body["error"]["code"] == "request_timeout"


def test_a_connection_answers_again_after_a_request_that_took_its_time_to_be_answered(server):
    """The deadline covers receiving a request only: a slow answer (here, waiting longer than the deadline
    before the next request on a kept-alive connection is fine too) is not cut off."""
    with _connect(server) as sock:
        sock.sendall(_head("GET", "/healthz"))
        first = _read_one(sock)
        time.sleep(REQUEST_TIMEOUT + 1)  # idle between requests: not a request being received
        sock.sendall(_head("GET", "/healthz", "Connection: close"))
        second = _read_all(sock)
    assert _parse(first)[0] == 200 and _parse(second)[0] == 200


@pytest.mark.django_db(transaction=True)
def test_uploads_and_json_bodies_under_their_limits_still_work(server):
    org = OrganizationFactory()
    secret = issue_key(org, scopes=["read", "documents:write"]).secret
    auth = {"Authorization": f"Bearer {secret}"}
    text = ("Refunds take 30 days from the purchase date.\n" * 40_000).encode()  # 1.8 MB: over the JSON limit
    response = requests.post(
        server.url + "/api/v1/documents",
        headers=auth,
        files={"file": ("refunds.txt", text, "text/plain")},
        timeout=WAIT,
    )
    assert response.status_code == 202, response.text

    response = requests.post(server.url + "/api/v1/collections", headers=auth, json={"name": "Policies"}, timeout=WAIT)
    assert response.status_code == 201, response.text
    assert Document.all_orgs.filter(organization=org, size_bytes=len(text)).count() == 1


def test_daphne_listens_with_a_queue_for_bursts_of_clients(settings):
    from saas.core.http_server import with_backlog

    assert with_backlog("tcp:port=8000:interface=127.0.0.1", 1024) == "tcp:port=8000:interface=127.0.0.1:backlog=1024"
    assert with_backlog("tcp:port=8000:backlog=64", 1024) == "tcp:port=8000:backlog=64"  # an explicit one stays
    assert with_backlog("unix:/run/crewdesk.sock", 1024) == "unix:/run/crewdesk.sock"


def test_request_headers_over_the_limit_are_refused(server):
    """Twisted's limit under daphne (16 KiB of request line and headers); the API server keeps the same one."""
    with _connect(server) as sock:
        sock.sendall(_head("GET", "/healthz", *(f"X-Big-{i}: {'y' * 1000}" for i in range(40))))
        raw = _read_all(sock)
    status = int(raw.split(b" ", 2)[1])
    assert status in (400, 431)
    if status == 431:  # the API server answers in the error shape; Twisted with its own plain 400
        assert _parse(raw)[2]["error"]["code"] == "headers_too_large"


def test_a_request_that_is_not_http_gets_400_and_the_connection_closes(server):
    with _connect(server) as sock:
        sock.sendall(b"HELLO THERE\r\n\r\n")
        raw = _read_all(sock)
    assert raw.startswith(b"HTTP/1.1 400 ")


def test_a_second_request_on_the_connection_after_a_refused_one_is_not_read(server):
    """After the 413 the connection reads no request: the next one in the same packet is dropped."""
    with _connect(server) as sock:
        refused = _head("POST", "/api/v1/ask", "Content-Type: application/json", f"Content-Length: {10**9}")
        sock.sendall(refused + _head("GET", "/healthz"))
        raw = _read_all(sock)
    assert raw.startswith(b"HTTP/1.1 413 ") and raw.count(b"HTTP/1.1 ") == 1


def test_websockets_are_upgraded_by_daphne_only(server):
    """Websockets are daphne's (Channels): the API server answers an upgrade as a plain request (Django's 404);
    daphne hands it to Channels (whose consumer refuses a socket without a session: daphne's 403 "Access denied")."""
    with _connect(server) as sock:
        upgrade = ("Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Origin: http://127.0.0.1")  # fmt: skip
        sock.sendall(_head("GET", "/ws/notifications/", *upgrade))
        first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 404 " if server.kind == "api" else b"HTTP/1.1 403 Access denied")


def test_a_connection_that_never_sends_a_request_is_closed(server):
    """On the API server, a connection idle for HTTP_KEEP_ALIVE_TIMEOUT (here 5 s) before its first request is
    closed, as one idle between requests is."""
    if server.kind != "api":
        pytest.skip("the API server's keep-alive timer")
    with _connect(server) as sock:
        assert _read_all(sock) == b""  # closed by the server (the socket's timeout would fail a hang)
