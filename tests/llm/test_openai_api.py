"""The OpenAI-compatible API: the official `openai` SDK against our live servers (daphne and the API server),
and OpenAI-style errors for bad input."""

import json
import time

import httpx2
import openai
import pytest

from accounts.models import ApiKey, AuditEvent
from saas.llm.models import LLMCall, OrgLLMSettings, Span, Trace
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import OrganizationFactory

MESSAGES = [{"role": "user", "content": "Say something"}]


def _wait_for(probe, timeout: float = 15.0):
    """Poll for something another process does after answering (not a timing assertion: a deadline)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := probe():
            return found
        time.sleep(0.05)
    raise AssertionError("it did not happen within the deadline")


@pytest.fixture
def org_key(db):
    org = OrganizationFactory()
    return org, issue_key(org, scopes=["read", "ask"])


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
class TestTheOfficialSdk:
    @pytest.fixture(params=["daphne", "api"])
    def server(self, request):
        """Each test against daphne and against the API server (uvicorn), which developers' clients use."""
        return request.getfixturevalue(f"{request.param}_server")

    @pytest.fixture
    def sdk(self, server, fake, models, org_key):
        _, key = org_key
        return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key.secret, max_retries=0)

    def test_non_streaming(self, sdk, fake):
        completion = sdk.chat.completions.create(model="test-small", messages=MESSAGES)
        assert completion.choices[0].message.content == "The quick brown fox jumps over the lazy dog."
        assert completion.model == "test-small" and completion.usage.completion_tokens == 9
        # The row is written just after the answer was sent; its id is the one in the answer.
        call = _wait_for(lambda: LLMCall.all_orgs.first())
        assert call.status == "ok" and completion.id == f"chatcmpl-{call.pk}"

    def test_models_list_and_retrieve(self, sdk):
        listed = {model.id: model for model in sdk.models.list()}
        small = sdk.models.retrieve("test-small")
        assert small == listed["test-small"] and small.model_extra["crewdesk"]["capabilities"]["tools"] is True
        assert sdk.models.retrieve("auto").id == "auto"
        with pytest.raises(openai.NotFoundError) as refused:
            sdk.models.retrieve("no-such-model")
        assert refused.value.code == "model_not_found" and "no-such-model" in refused.value.message

    def test_the_async_routes_send_the_security_headers_every_other_response_sends(self, server, org_key):
        _, key = org_key
        auth = {"Authorization": f"Bearer {key.secret}", "X-Crewdesk-Cache": "bypass"}
        through_django = httpx2.get(f"{server.url}/v1/models", headers=auth, timeout=30)
        for path, body in [
            ("/v1/chat/completions", {"model": "test-small", "messages": MESSAGES}),
            ("/v1/embeddings", {"model": "nope", "input": "x"}),  # an error answer carries them too
        ]:
            answer = httpx2.post(f"{server.url}{path}", headers=auth, json=body, timeout=30)
            for header in ("Content-Security-Policy", "Permissions-Policy", "X-Frame-Options",
                           "X-Content-Type-Options", "Referrer-Policy", "Cross-Origin-Opener-Policy",
                           "X-Request-ID"):  # fmt: skip
                assert answer.headers.get(header), (path, header)
                if header != "X-Request-ID":
                    assert answer.headers[header] == through_django.headers[header], (path, header)

    def test_the_admissions_rare_steps_on_the_database_answer_as_before(self, server, sdk, org_key):
        """The admission runs on the server's loop (saas.core.on_loop); what it does on the database now and then
        (a cached answer's row, an audit row for an address a key may not call from) goes through hops."""
        org, key = org_key
        first = sdk.chat.completions.create(model="test-small", messages=MESSAGES)
        again = sdk.chat.completions.create(model="test-small", messages=MESSAGES)
        assert again.choices[0].message.content == first.choices[0].message.content
        assert _wait_for(lambda: LLMCall.all_orgs.filter(organization=org, cache="exact").count() == 1)

        pinned = ApiKey.all_orgs.get(pk=key.api_key.pk)
        pinned.allowed_networks = ["198.51.100.0/24"]
        pinned.save()  # its memo's version moves: every server process reloads the key
        for _ in range(2):
            with pytest.raises(openai.PermissionDeniedError) as denied:
                sdk.chat.completions.create(model="test-small", messages=MESSAGES)
            assert denied.value.code == "ip_not_allowed"
        audited = AuditEvent.all_orgs.filter(organization=org, action="api_key.ip_denied")
        assert [(e.ip, e.target_id) for e in audited] == [("127.0.0.1", str(pinned.pk))]  # once an hour

    def test_a_client_hanging_up_before_the_answer_still_gets_the_call_recorded(self, server, org_key, fake, models):
        _, key = org_key
        fake.script("fake-small", {"delay": 1.0})
        headers = {"Authorization": f"Bearer {key.secret}", "X-Crewdesk-Cache": "bypass"}
        with pytest.raises(httpx2.ReadTimeout):
            httpx2.post(f"{server.url}/v1/chat/completions", headers=headers, timeout=0.3,
                        json={"model": "test-small", "messages": MESSAGES})  # fmt: skip
        call = _wait_for(lambda: LLMCall.all_orgs.first())  # the upstream answered and was paid for
        assert call.status == "ok" and call.completion_tokens == 9

    def test_streaming_with_usage(self, sdk, fake):
        stream = sdk.chat.completions.create(
            model="test-small", messages=MESSAGES, stream=True, stream_options={"include_usage": True},
            extra_headers={"X-Crewdesk-Cache": "bypass"},
        )  # fmt: skip
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "The quick brown fox jumps over the lazy dog."
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 9
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        # The trace travels with the ledger row: one completion trace whose one span is the call's.
        call = _wait_for(lambda: LLMCall.all_orgs.first())
        trace = Trace.all_orgs.get(kind="completion")
        (span,) = Span.all_orgs.filter(trace=trace)
        assert trace.status == "ok" and str(span.llm_call_id) == str(call.pk) and call.trace_id == str(trace.pk)
        assert trace.completion_tokens == call.completion_tokens == 9 and trace.api_key_id == call.api_key_id

    def test_a_policy_change_reaches_the_live_server_at_once(self, sdk, org_key, models, fake):
        sdk.chat.completions.create(model="test-small", messages=MESSAGES)  # the server now holds the settings
        org, _ = org_key
        policy = OrgLLMSettings(organization=org, allowed_models=["test-large"])
        policy.save()
        with pytest.raises(openai.BadRequestError) as excinfo:
            sdk.chat.completions.create(model="test-small", messages=MESSAGES)
        assert excinfo.value.code == "model_not_allowed"
        models["large"].fallbacks, models["large"].upstream_model = [], "fake-large-v2"
        models["large"].save()
        completion = sdk.chat.completions.create(
            model="test-large", messages=MESSAGES, extra_headers={"X-Crewdesk-Cache": "bypass"}
        )
        assert completion.model == "test-large" and fake.requests()[-1]["body"]["model"] == "fake-large-v2"

    def test_tokens_reach_the_client_while_the_upstream_is_still_streaming(self, sdk, fake):
        fake.script("fake-small", {"hold_after": 2})  # the upstream sends two tokens, then waits for us
        stream = sdk.chat.completions.create(
            model="test-small", messages=MESSAGES, stream=True, extra_headers={"X-Crewdesk-Cache": "bypass"}
        )
        received = ""
        for chunk in stream:
            received += chunk.choices[0].delta.content or "" if chunk.choices else ""
            if received == "The quick":
                break
        # Two tokens are here and the upstream is still holding the rest: nothing was buffered to the end.
        assert not LLMCall.all_orgs.exists()
        fake.release()
        rest = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert received + rest == "The quick brown fox jumps over the lazy dog."
        assert LLMCall.all_orgs.get().status == "ok"

    def test_streams_give_their_upstream_connection_back_for_the_next_call(self, sdk, fake):
        """The fake streams as OpenAI's API does (chunked, kept alive): each stream is read to its end (here the
        body's end comes 0.2 s after [DONE]), so the next call reuses the connection instead of opening one (TCP,
        and TLS to a real provider) per stream."""
        sdk.chat.completions.create(model="test-small", messages=MESSAGES)  # the server's pool holds a connection
        fake.script("fake-small", *[{"end_after": 0.2}] * 3)  # the body's last chunk lags the [DONE]
        before = fake.stats()["connections_made"]
        for _ in range(3):
            stream = sdk.chat.completions.create(model="test-small", messages=MESSAGES, stream=True,
                                                 extra_headers={"X-Crewdesk-Cache": "bypass"})  # fmt: skip
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).endswith("lazy dog.")
        opened = fake.stats()["connections_made"] - before - 1  # this stats request's own connection left out
        assert opened == 0

    def test_a_client_hanging_up_mid_stream_cancels_the_upstream_call(self, server, org_key, fake, models):
        _, key = org_key
        fake.script("fake-small", {"hold_after": 2})
        body = {"model": "test-small", "messages": MESSAGES, "stream": True}
        headers = {"Authorization": f"Bearer {key.secret}", "X-Crewdesk-Cache": "bypass"}
        with (
            httpx2.Client(base_url=server.url, timeout=10) as client,
            client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response,
        ):
            for line in response.iter_lines():
                if line.startswith("data: {") and " quick" in json.dumps(json.loads(line[6:])["choices"]):
                    break  # leave with the upstream mid-stream
        try:
            # The upstream holds the rest until the server has noticed: released first, the answer could end
            # before a loaded server saw the hang-up (and rightly record it as answered).
            call = _wait_for(lambda: LLMCall.all_orgs.filter(status="cancelled").first())
        finally:
            fake.release()
        assert call.error_class == "cancelled" and call.attempts[-1]["status"] == "cancelled"
        trace = Trace.all_orgs.get(pk=call.trace_id)
        assert trace.status == "cancelled" and Span.all_orgs.get(trace=trace).llm_call_id == call.pk

    def test_models_and_errors(self, sdk, server):
        assert {"test-small", "test-large", "auto"} <= {m.id for m in sdk.models.list()}
        with pytest.raises(openai.BadRequestError) as excinfo:
            sdk.chat.completions.create(model="no-such-model", messages=MESSAGES)
        assert excinfo.value.code == "model_not_found"
        bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="cdk_live_AAAAAAAA_" + "x" * 43, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()

    def test_upstream_exhaustion_is_a_429_with_retry_after(self, sdk, fake):
        fake.script("fake-small", *[{"status": 429, "retry_after": 0}] * 3)
        with pytest.raises(openai.RateLimitError) as excinfo:
            sdk.chat.completions.create(
                model="test-small", messages=MESSAGES, extra_headers={"X-Crewdesk-Cache": "bypass"}
            )
        assert excinfo.value.code == "rate_limited"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ("{not json", "parse_error", None),
        ({"model": "test-small", "messages": []}, None, "messages"),
        ({"model": "test-small"}, None, "messages"),
        ({"model": "test-small", "messages": [{"role": "wizard", "content": "hi"}]}, "bad_request", None),
        ({"model": "test-small", "messages": [{"role": "user", "content": "word " * 20000}]}, "context_too_long", None),
        ({"model": "nope", "messages": MESSAGES}, "model_not_found", None),
        ({"model": "test-small", "messages": MESSAGES, "temperature": 7}, None, "temperature"),
        ({"model": "test-small", "messages": MESSAGES, "frobnicate": True}, None, "frobnicate"),
    ],
)
def test_bad_input_gets_an_openai_style_400(fake, models, org_key, body, code, param):
    _, key = org_key
    raw = body if isinstance(body, str) else json.dumps(body)
    response = key_client(key.secret).post("/v1/chat/completions", raw, content_type="application/json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if code:
        assert error["code"] == code
    if param:
        assert error["param"] == param
    assert fake.requests() == []


@pytest.mark.django_db
def test_a_model_the_org_may_not_use_is_refused(fake, models, org_key):
    org, key = org_key
    OrgLLMSettings.all_orgs.create(organization=org, allowed_models=["test-small"])
    client = key_client(key.secret)
    response = client.post("/v1/chat/completions", {"model": "test-large", "messages": MESSAGES}, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "model_not_allowed"
    ids = {m["id"] for m in client.get("/v1/models").json()["data"]}
    assert "test-large" not in ids and "test-small" in ids


@pytest.mark.django_db
def test_a_key_without_the_ask_scope_cannot_generate(fake, models):
    key = issue_key(OrganizationFactory(), scopes=["read"])
    response = key_client(key.secret).post(
        "/v1/chat/completions", {"model": "test-small", "messages": MESSAGES}, format="json"
    )
    assert response.status_code == 403 and response.json()["error"]["type"] == "permission_error"


@pytest.mark.django_db
def test_generate_in_our_api_json_and_sse(fake, models, org_key):
    _, key = org_key
    client = key_client(key.secret)
    body = client.post("/api/v1/generate", {"model": "test-small", "prompt": "Hi"}, format="json").json()
    assert (
        body["text"].startswith("The quick")
        and body["model"] == "test-small"
        and body["usage"]["completion_tokens"] == 9
    )
    response = client.post("/api/v1/generate", {"model": "test-small", "prompt": "Hi", "stream": True},
                           format="json", HTTP_X_CREWDESK_CACHE="bypass")  # fmt: skip
    assert response["Content-Type"] == "text/event-stream"
    events = [json.loads(line[6:]) for line in b"".join(response.streaming_content).decode().split("\n\n") if line]
    assert "".join(e["text"] for e in events if e["type"] == "delta").startswith("The quick")
    assert events[-1]["type"] == "done" and events[-1]["usage"]["completion_tokens"] == 9
    error = client.post("/api/v1/generate", {"model": "nope", "prompt": "Hi"}, format="json")
    assert error.status_code == 400 and error.json()["error"]["code"] == "model_not_found"
    both = client.post("/api/v1/generate", {"prompt": "Hi", "messages": MESSAGES}, format="json")
    assert both.status_code == 400 and both.json()["error"]["code"] == "invalid"


@pytest.mark.django_db
@pytest.mark.parametrize("accept", ["text/event-stream", "text/html", "application/xml"])
def test_what_the_client_accepts_does_not_stop_an_answer(fake, models, org_key, accept):
    """The API answers JSON (or SSE for a stream) whatever Accept says, as OpenAI's does; curl, EventSource and
    some SDKs send `Accept: text/event-stream` for a stream. No 406, on /v1 or on our own API."""
    _, key = org_key
    client = key_client(key.secret)
    answer = client.post("/v1/chat/completions", {"model": "test-small", "messages": MESSAGES}, format="json",
                         HTTP_ACCEPT=accept, HTTP_X_CREWDESK_CACHE="bypass")  # fmt: skip
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]
    stream = client.post("/v1/chat/completions", {"model": "test-small", "messages": MESSAGES, "stream": True},
                         format="json", HTTP_ACCEPT=accept, HTTP_X_CREWDESK_CACHE="bypass")  # fmt: skip
    assert stream.status_code == 200 and stream["Content-Type"] == "text/event-stream"
    assert b"[DONE]" in b"".join(stream.streaming_content)
    models_list = client.get("/v1/models", HTTP_ACCEPT=accept)
    assert models_list.status_code == 200 and models_list.json()["object"] == "list"
    refused = client.post("/v1/chat/completions", {"model": "nope", "messages": MESSAGES}, format="json",
                          HTTP_ACCEPT=accept)  # fmt: skip
    assert refused.status_code in (400, 404) and refused.json()["error"]["code"] == "model_not_found"
    generated = client.post("/api/v1/generate", {"model": "test-small", "prompt": "Hi", "stream": True},
                            format="json", HTTP_ACCEPT=accept, HTTP_X_CREWDESK_CACHE="bypass")  # fmt: skip
    assert generated.status_code == 200 and generated["Content-Type"] == "text/event-stream"
    assert b'"type": "done"' in b"".join(generated.streaming_content).replace(b'"type":"done"', b'"type": "done"')
    missing = client.get("/api/v1/runs/00000000-0000-0000-0000-000000000000/events", HTTP_ACCEPT=accept)
    assert missing.status_code == 404 and missing["Content-Type"] == "application/json"
