"""The fakes keep bounded state: a benchmark's hundreds of thousands of requests must not grow them."""

import http.client
import json

import pytest

from saas.llm import fake_upstream
from saas.llm.fake_upstream import FakeUpstreamServer, FakeUpstreamState
from saas.llm.fakes import FakeState
from saas.llm.fakes.anthropic import FakeAnthropicServer


@pytest.fixture
def small_upstream():
    server = FakeUpstreamServer(max_requests=50).start_in_thread()
    yield server
    server.shutdown()
    server.server_close()


def _get(connection: http.client.HTTPConnection, path: str):
    connection.request("GET", path)
    return json.loads(connection.getresponse().read())


def test_only_the_last_requests_are_kept_and_every_one_is_counted(small_upstream):
    connection = http.client.HTTPConnection("127.0.0.1", small_upstream.server_address[1], timeout=10)
    for n in range(200):
        body = json.dumps({"model": "fake-small", "messages": [{"role": "user", "content": f"echo: {n}"}]})
        connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        answer = json.loads(connection.getresponse().read())
        assert answer["choices"][0]["message"]["content"] == str(n)

    kept = _get(connection, "/_requests")
    assert len(kept) == 50 == len(small_upstream.state.requests)
    # The newest are kept, oldest first, so tests reading the last request still see it.
    assert [r["body"]["messages"][0]["content"] for r in kept] == [f"echo: {n}" for n in range(150, 200)]
    # ... all on one kept-alive connection
    assert _get(connection, "/_stats") == {"requests_seen": 200, "requests_kept": 50, "max_requests": 50,
                                           "connections_made": 1}  # fmt: skip

    connection.request("POST", "/_reset", "{}", {"Content-Type": "application/json"})
    connection.getresponse().read()
    assert _get(connection, "/_requests") == []
    assert _get(connection, "/_stats")["requests_seen"] == 0
    connection.close()


def test_the_bound_defaults_to_a_thousand_and_follows_the_environment(monkeypatch):
    assert FakeUpstreamState().requests.maxlen == fake_upstream.DEFAULT_MAX_REQUESTS == 1000
    monkeypatch.setenv("FAKE_UPSTREAM_MAX_REQUESTS", "7")
    assert FakeUpstreamState().requests.maxlen == 7
    with pytest.raises(ValueError, match="at least 1"):
        FakeUpstreamState(max_requests=0)


def test_the_other_providers_fakes_are_bounded_too(monkeypatch):
    monkeypatch.setenv("FAKE_UPSTREAM_MAX_REQUESTS", "5")
    server = FakeAnthropicServer().start_in_thread()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        for n in range(12):
            body = json.dumps({"model": "claude-fake", "max_tokens": 16,
                               "messages": [{"role": "user", "content": f"echo: {n}"}]})  # fmt: skip
            connection.request("POST", "/v1/messages", body, {"Content-Type": "application/json"})
            assert json.loads(connection.getresponse().read())["content"][0]["text"] == str(n)
        assert [r["body"]["messages"][0]["content"] for r in _get(connection, "/_requests")] == [
            f"echo: {n}" for n in range(7, 12)
        ]
        assert _get(connection, "/_stats") == {"requests_seen": 12, "requests_kept": 5, "max_requests": 5,
                                               "connections_made": 1}  # fmt: skip
        connection.close()
    finally:
        server.shutdown()
        server.server_close()
    assert FakeState(max_requests=3).requests.maxlen == 3
