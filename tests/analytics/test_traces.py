"""Traces: an ask, a generate call, a chat completion and a crew run each leave one trace whose spans (retrieval,
model calls, tool calls, task steps) agree with the ledger; the API lists and opens them for admins of the org
only; a failure to record a trace never fails the request."""

from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from agents.models import Run
from documents import ingestion
from saas.llm.models import LLMCall, ModelConfig, Span, Trace
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import OrganizationFactory
from tests.agents.test_crews import _run_here, _with_policy
from tests.analytics.factories import SpanFactory, TraceFactory
from tests.documents import files
from tests.llm.conftest import fake  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db

HANDBOOK = [
    "Welcome to the Acme handbook. It explains how the company works.",
    "Travel expenses are reimbursed within 14 days of the trip report.",
    "Refunds take 30 days from the purchase date. Customers receive an email when the refund is sent.",
]
SCOPES = ["read", "ask", "documents:write", "crews:run", "admin"]


@pytest.fixture
def acme(db):
    org = OrganizationFactory()
    client = key_client(issue_key(org, scopes=SCOPES).secret)
    response = client.post("/api/v1/documents", {"file": SimpleUploadedFile("handbook.pdf", files.pdf(HANDBOOK))},
                           format="multipart")  # fmt: skip
    assert response.status_code == 202, response.content
    ingestion.document_ingest(org_id=org.pk, document_id=response.json()["id"])
    return org, client


@pytest.fixture
def priced(fake):  # noqa: F811
    """A model on the fake upstream with a price, so that costs are not all zero."""
    return ModelConfig.objects.create(
        alias="trace-priced", upstream="openai", upstream_model="fake-small", tier="small",
        input_price_per_mtok=Decimal("3.00"), output_price_per_mtok=Decimal("15.00"), context_window=8192,
    )  # fmt: skip


def _spans(trace: Trace) -> list[Span]:
    return list(Span.all_orgs.filter(trace=trace).order_by("seq"))


def _agrees_with_the_ledger(trace: Trace) -> list[LLMCall]:
    """Every model call of the trace is a span with its ledger row's tokens and cost, and the trace's totals are
    the rows' sums; every row of the trace is a span."""
    llm = [s for s in _spans(trace) if s.kind == Span.Kind.LLM]
    calls = {str(c.pk): c for c in LLMCall.all_orgs.filter(trace_id=str(trace.pk))}
    assert sorted(str(s.llm_call_id) for s in llm) == sorted(calls)
    for span in llm:
        row = calls[str(span.llm_call_id)]
        assert (span.prompt_tokens, span.completion_tokens, span.cost_usd) == (
            row.prompt_tokens, row.completion_tokens, row.cost_usd)  # fmt: skip
        assert span.name == (row.model_used or row.model_requested) and span.status == row.status
        assert 0 <= span.start_ms <= span.end_ms <= trace.duration_ms
    assert trace.llm_calls == len(calls)
    assert trace.prompt_tokens == sum(c.prompt_tokens for c in calls.values())
    assert trace.completion_tokens == sum(c.completion_tokens for c in calls.values())
    assert trace.cost_usd == sum((c.cost_usd for c in calls.values()), Decimal(0))
    return list(calls.values())


def test_an_ask_is_one_trace_with_its_retrieval_and_model_calls_as_the_ledger_has_them(acme, priced, fake):  # noqa: F811
    org, client = acme
    fake.script("fake-small", {"reply": "Refunds take 30 days from the purchase date [1]."})
    body = client.post("/api/v1/ask", {"question": "How long do refunds take?", "model": "trace-priced"},
                       format="json").json()  # fmt: skip
    assert body["citations"], body
    trace = Trace.all_orgs.get(organization=org, kind="ask")
    assert trace.status == "ok" and trace.api_key is not None
    spans = _spans(trace)
    retrieval = [s for s in spans if s.kind == Span.Kind.RETRIEVAL]
    assert len(retrieval) == 1
    passages = retrieval[0].attributes["passages"]
    assert body["citations"][0]["chunk_id"] in [p["chunk_id"] for p in passages]
    assert all(isinstance(p["score"], float) and p["score"] > 0 for p in passages)
    assert "Refunds" not in str(retrieval[0].attributes)  # ids and scores, never the passages' text
    calls = _agrees_with_the_ledger(trace)
    answer = next(s for s in spans if str(s.llm_call_id) == body["id"])
    assert answer.attributes["operation"] == "chat" and answer.cost_usd > 0
    assert answer.cost_usd == Decimal(body["cost_usd"])
    assert {c.feature for c in calls} == {"ask"} and len(calls) >= 2  # the question's embedding and the answer
    assert retrieval[0].end_ms <= answer.start_ms  # retrieval comes before the answer on the timeline


def test_a_streamed_ask_is_traced_too(acme):
    org, client = acme
    response = client.post("/api/v1/ask", {"question": "How long do refunds take?", "stream": True}, format="json")
    b"".join(response.streaming_content)
    trace = Trace.all_orgs.get(organization=org, kind="ask")
    assert {s.kind for s in _spans(trace)} == {"retrieval", "llm"}
    _agrees_with_the_ledger(trace)


def test_each_generate_call_and_chat_completion_is_a_trace_of_one_model_call(acme, priced):
    org, client = acme
    for n in range(2):  # different prompts: a cached answer would cost nothing
        response = client.post("/api/v1/generate", {"prompt": f"Say hi {n}", "model": "trace-priced"}, format="json")
        assert response.status_code == 200, response.content
    streamed = client.post("/api/v1/generate", {"prompt": "Say hi 2", "model": "trace-priced", "stream": True},
                           format="json")  # fmt: skip
    b"".join(streamed.streaming_content)
    completion = client.post("/v1/chat/completions", {"model": "trace-priced", "messages": [
        {"role": "user", "content": "Say hi 3"}]}, format="json")  # fmt: skip
    assert completion.status_code == 200, completion.content
    generated = Trace.all_orgs.filter(organization=org, kind="generate")
    assert generated.count() == 3
    assert Trace.all_orgs.filter(organization=org, kind="completion").count() == 1
    for trace in Trace.all_orgs.filter(organization=org, kind__in=["generate", "completion"]):
        calls = _agrees_with_the_ledger(trace)
        assert len(calls) == 1 and calls[0].cost_usd > 0


def test_a_refused_generate_call_leaves_a_failed_trace(acme):
    org, client = acme
    response = client.post("/api/v1/generate", {"prompt": "Say hi", "model": "no-such-model"}, format="json")
    assert response.status_code >= 400
    trace = Trace.all_orgs.get(organization=org, kind="generate")
    assert trace.status == "error" and trace.error_class
    _agrees_with_the_ledger(trace)


def test_a_crew_run_is_one_trace_with_a_step_per_task_and_its_tool_and_model_calls(acme):
    org, client = acme
    _with_policy(org, client)
    crew = client.post("/api/v1/crew-starters", {"starter": "research-brief"}, format="json").json()
    run = _run_here(client, crew["id"], {"topic": "how long refunds take"})
    assert run.status == Run.Status.SUCCEEDED, run.error
    trace = Trace.all_orgs.get(pk=run.pk)  # the run's id: the ledger rows' trace id already
    assert trace.kind == "crew_run" and trace.subject_id == str(run.pk) and trace.status == "ok"
    spans = _spans(trace)
    steps = [s for s in spans if s.kind == Span.Kind.STEP]
    assert [s.name for s in steps] == ["Task research", "Task draft", "Task edit"]
    by_seq = {s.seq: s for s in spans}
    tools = [s for s in spans if s.kind == Span.Kind.TOOL]
    assert tools and all(t.parent_seq is not None and by_seq[t.parent_seq].kind == Span.Kind.STEP for t in tools)
    assert {t.attributes["tool"] for t in tools} >= {"search_documents"}
    searched = [s for s in spans if s.kind == Span.Kind.RETRIEVAL]
    assert searched and all(s.parent_seq is not None and by_seq[s.parent_seq].kind == Span.Kind.TOOL for s in searched)
    assert all(s.parent_seq is not None for s in spans if s.kind == Span.Kind.LLM)  # inside a task
    _agrees_with_the_ledger(trace)
    assert (trace.prompt_tokens, trace.completion_tokens, trace.cost_usd) == (
        run.prompt_tokens, run.completion_tokens, run.cost_usd)  # fmt: skip


def test_a_failure_to_record_never_fails_the_answer(acme, monkeypatch):
    org, client = acme

    def broken(*args, **kwargs):
        raise RuntimeError("the trace store is down")

    monkeypatch.setattr(Span.all_orgs, "bulk_create", broken)
    response = client.post("/api/v1/ask", {"question": "How long do refunds take?"}, format="json")
    assert response.status_code == 200 and response.json()["citations"]
    assert not Trace.all_orgs.filter(organization=org).exists()  # the trace's savepoint rolled back whole
    assert LLMCall.all_orgs.filter(organization=org, feature="ask").exists()


# --- The API -------------------------------------------------------------------------------------------------


def test_the_api_lists_filters_and_opens_traces(acme):
    _org, client = acme
    client.post("/api/v1/ask", {"question": "How long do refunds take?"}, format="json")
    client.post("/api/v1/generate", {"prompt": "Say hi", "model": "local"}, format="json")
    listed = client.get("/api/v1/traces").json()["results"]
    assert sorted(t["kind"] for t in listed) == ["ask", "generate"]
    asks = client.get("/api/v1/traces", {"kind": "ask"}).json()["results"]
    assert [t["kind"] for t in asks] == ["ask"]
    assert client.get("/api/v1/traces", {"q": asks[0]["id"]}).json()["results"][0]["id"] == asks[0]["id"]
    assert client.get("/api/v1/traces", {"kind": "nope"}).status_code == 400
    detail = client.get(f"/api/v1/traces/{asks[0]['id']}").json()
    assert {s["kind"] for s in detail["spans"]} == {"retrieval", "llm"}
    assert detail["llm_calls"] == len([s for s in detail["spans"] if s["kind"] == "llm"])
    for span in detail["spans"]:
        if span["kind"] == "llm":
            row = client.get(f"/api/v1/requests/{span['llm_call_id']}").json()
            assert row["trace_id"] == asks[0]["id"]
            assert (span["tokens"]["prompt"], span["tokens"]["completion"]) == (
                row["tokens"]["prompt"], row["tokens"]["completion"])  # fmt: skip


def test_another_orgs_trace_is_a_404_and_never_listed(acme):
    _org, client = acme
    theirs = SpanFactory(organization=OrganizationFactory()).trace
    response = client.get(f"/api/v1/traces/{theirs.pk}")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert client.get("/api/v1/traces/not-a-uuid").status_code == 404
    assert str(theirs.pk) not in client.get("/api/v1/traces").content.decode()


def test_traces_need_the_admin_scope(acme):
    org, _ = acme
    mine = TraceFactory(organization=org)
    reader = key_client(issue_key(org, scopes=["read", "ask"]).secret)
    assert reader.get("/api/v1/traces").status_code == 403
    assert reader.get(f"/api/v1/traces/{mine.pk}").status_code == 403


@pytest.fixture
def batched(settings):
    from saas.core.redis import get_redis
    from saas.llm import ledger

    settings.LLM_LEDGER = {**settings.LLM_LEDGER, "batched": True}
    get_redis().delete(ledger.STREAM, ledger.DEAD)
    yield ledger
    get_redis().delete(ledger.STREAM, ledger.DEAD)


def test_a_chat_completions_trace_travels_with_its_ledger_row_through_the_writers_stream(priced, batched):
    """/v1/chat/completions writes its trace with the call's ledger row (one stream entry, no transaction of its
    own): answered, streamed and refused, each trace appears with its row when the writer drains the stream."""
    org = OrganizationFactory()
    client = key_client(issue_key(org, scopes=SCOPES).secret)
    ask = {"model": "trace-priced", "messages": [{"role": "user", "content": "Say hi"}]}
    assert client.post("/v1/chat/completions", ask, format="json").status_code == 200
    streamed = client.post("/v1/chat/completions", {**ask, "stream": True}, format="json",
                           HTTP_X_CREWDESK_CACHE="bypass")  # fmt: skip
    assert b"[DONE]" in b"".join(streamed.streaming_content)
    refused = client.post("/v1/chat/completions", {**ask, "model": "no-such-model"}, format="json")
    assert refused.status_code == 400
    assert batched.pending() == 3 and not Trace.all_orgs.filter(organization=org).exists()
    assert not LLMCall.all_orgs.filter(organization=org).exists()
    batched.drain()
    traces = Trace.all_orgs.filter(organization=org, kind="completion")
    assert sorted(t.status for t in traces) == ["error", "ok", "ok"]
    assert traces.get(status="error").error_class == "model_not_found"
    for trace in traces:
        (call,) = _agrees_with_the_ledger(trace)
        assert trace.api_key_id == call.api_key_id and trace.request_id == call.request_id
    assert Span.all_orgs.filter(organization=org).count() == 3 and batched.pending() == 0
