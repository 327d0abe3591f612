"""Sentry is initialised when SENTRY_DSN is set: an event travels over real HTTP to a local server speaking
Sentry's envelope protocol, tagged with the Django, Celery and Redis integrations."""

import gzip
import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import run_python, subprocess_env

SNIPPET = """
import django, sentry_sdk
django.setup()
client = sentry_sdk.get_client()
print(sorted(client.integrations))
sentry_sdk.capture_message("sentry probe from crewdesk")
sentry_sdk.flush(timeout=10)
"""


class FakeSentry(BaseHTTPRequestHandler):
    envelopes: list[bytes] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding == "br":  # the SDK's choice when brotli is installed (it is, through locust)
            import brotli

            body = brotli.decompress(body)
        FakeSentry.envelopes.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"id": "00000000000000000000000000000000"}')

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_sentry():
    FakeSentry.envelopes = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeSentry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.mark.django_db
def test_events_reach_sentry_when_a_dsn_is_set(fake_sentry):
    dsn = f"http://publickey@127.0.0.1:{fake_sentry.server_address[1]}/42"
    result = run_python(SNIPPET, subprocess_env(SENTRY_DSN=dsn))
    assert result.returncode == 0, result.stderr
    integrations = result.stdout.strip().splitlines()[0]
    for name in ("django", "celery", "redis"):
        assert f"'{name}'" in integrations
    items = [json.loads(line) for env in FakeSentry.envelopes for line in env.splitlines() if line.startswith(b"{")]
    messages = [item for item in items if item.get("message") == "sentry probe from crewdesk"]
    assert messages, items
    assert messages[0]["environment"] == "development"


@pytest.mark.django_db
def test_nothing_is_initialised_without_a_dsn():
    env = subprocess_env()
    env.pop("SENTRY_DSN", None)
    result = run_python(SNIPPET, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[0] == "[]"
