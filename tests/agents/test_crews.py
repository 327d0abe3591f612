"""Crews through the API and the engine, in this process: definitions, runs on the local engine and on the
fake upstream's function calling, and every way a run can go wrong. (tests/agents/test_live_runs.py runs them
in real Celery workers.)"""

import json
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from agents import crew_runs
from agents.models import Crew, Run, RunStep
from documents import ingestion
from saas.core import crypto
from saas.llm.models import LLMCall
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import OrganizationFactory
from tests.documents import files

pytestmark = pytest.mark.django_db

POLICY = [
    "Welcome to the Acme handbook.",
    "Refunds take 30 days from the purchase date. Customers receive an email when the refund is sent.",
]


@pytest.fixture
def acme(db):
    org = OrganizationFactory()
    client = key_client(issue_key(org, scopes=["read", "ask", "documents:write", "crews:run"]).secret)
    return org, client


def _with_policy(org, client):
    response = client.post("/api/v1/documents", {"file": SimpleUploadedFile("policy.pdf", files.pdf(POLICY))},
                           format="multipart")  # fmt: skip
    assert response.status_code == 202, response.content
    ingestion.document_ingest(org_id=org.pk, document_id=response.json()["id"])


def _start(client, crew_id, inputs=None, key=None, captured=None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post(f"/api/v1/crews/{crew_id}/runs", {"inputs": inputs or {}}, format="json", **headers)


def _run_here(client, crew_id, inputs=None) -> Run:
    """Start through the API, then run the task's work in this process (no worker in these tests)."""
    response = _start(client, crew_id, inputs)
    assert response.status_code == 202, response.content
    assert response["Location"] == f"/api/v1/runs/{response.json()['id']}"
    run = Run.all_orgs.get(pk=response.json()["id"])
    crew_runs.run_execute(org_id=run.organization_id, run_id=run.pk)
    run.refresh_from_db()
    return run


def _adds_up(run: Run) -> None:
    """The run's totals are its steps', and its steps' are the ledger's: every call of the run, once."""
    steps = list(RunStep.all_orgs.filter(run=run))
    calls = list(LLMCall.all_orgs.filter(trace_id=str(run.pk)))
    assert sorted(str(s.llm_call_id) for s in steps if s.llm_call_id) == sorted(str(c.pk) for c in calls)
    assert run.cost_usd == sum((s.cost_usd for s in steps), Decimal(0)) == sum((c.cost_usd for c in calls), Decimal(0))
    assert run.prompt_tokens == sum(s.prompt_tokens for s in steps) == sum(c.prompt_tokens for c in calls)
    assert run.completion_tokens == sum(s.completion_tokens for s in steps) == sum(c.completion_tokens for c in calls)
    assert [s.seq for s in sorted(steps, key=lambda s: s.seq)] == list(range(1, len(steps) + 1))


def _crew(client, **overrides) -> dict:
    spec = {
        "name": "Calc", "process": "sequential", "default_model": "test-small",
        "agents": [{"role": "mathematician", "goal": "Compute exactly.", "tools": ["calculator"]}],
        "tasks": [{"name": "compute", "agent": "mathematician", "description": "Compute {a} times 7."}],
        **overrides,
    }  # fmt: skip
    response = client.post("/api/v1/crews", spec, format="json")
    assert response.status_code == 201, response.content
    return response.json()


# --- The local engine ---------------------------------------------------------------------------------------


def test_the_research_brief_runs_offline_and_cites_the_document(acme):
    org, client = acme
    _with_policy(org, client)
    crew = client.post("/api/v1/crew-starters", {"starter": "research-brief"}, format="json").json()
    assert [a["role"] for a in crew["agents"]] == ["researcher", "writer", "editor"] and crew["inputs"] == ["topic"]
    run = _run_here(client, crew["id"], {"topic": "how long refunds take"})
    assert run.status == "succeeded", run.error
    body = client.get(f"/api/v1/runs/{run.pk}").json()
    assert "Refunds take 30 days from the purchase date." in body["output"] and "[1]" in body["output"]
    kinds = [(s["kind"], s["agent"]) for s in body["steps"]]
    assert kinds[0] == ("plan", "")
    assert ("tool_call", "researcher") in kinds and ("tool_result", "researcher") in kinds
    assert [s["task"] for s in body["steps"] if s["kind"] == "output"] == ["research", "draft", "edit"]
    (result,) = [s for s in body["steps"] if s["kind"] == "tool_result"]
    assert result["data"]["citations"][0]["title"] == "policy.pdf" and result["data"]["citations"][0]["page"] == 2
    assert {a["name"] for a in body["breakdown"]["agents"]} == {"researcher", "writer", "editor"}
    _adds_up(run)
    assert LLMCall.all_orgs.filter(trace_id=str(run.pk), feature="crew").count() >= 5


def test_a_hierarchical_crew_offline_delegates_each_task_to_the_closest_member(acme):
    org, client = acme
    _with_policy(org, client)
    crew = _crew(client, name="Desk", process="hierarchical", default_model="local", agents=[
        {"role": "researcher", "goal": "Research facts in documents.", "tools": ["search_documents"]},
        {"role": "writer", "goal": "Write summaries for customers."},
    ], tasks=[
        {"name": "facts", "description": "Research the refund facts in the documents."},
        {"name": "summary", "description": "Write a summary of the refund facts for customers.", "context": ["facts"]},
    ])  # fmt: skip
    run = _run_here(client, crew["id"])
    assert run.status == "succeeded", run.error
    plans = [crypto.decrypt(s.content_encrypted) for s in RunStep.all_orgs.filter(run=run, kind="plan").order_by("seq")]
    assert [p.split(":")[0] for p in plans if p.startswith("Delegated")] == ["Delegated to researcher",
                                                                            "Delegated to writer"]  # fmt: skip
    assert sum(p == "Accepted." for p in plans) == 2
    output = crew_runs.run_output(run)
    assert "refund" in output and "[1]" in output  # quoted from the researcher's findings, citation kept
    _adds_up(run)


# --- The fake upstream's function calling ------------------------------------------------------------------


@pytest.fixture
def native(fake, models):
    for model in models.values():
        model.supports_tools = True
        model.save(update_fields=["supports_tools"])
    return fake


def test_a_sequential_crew_calls_tools_through_function_calling(acme, native):
    _org, client = acme
    crew = _crew(client)
    native.script("fake-small", {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
                  {"reply": "6 times 7 is 42."})  # fmt: skip
    run = _run_here(client, crew["id"], {"a": 6})
    assert run.status == "succeeded", run.error
    assert crew_runs.run_output(run) == "6 times 7 is 42."
    first, second = [r["body"] for r in native.requests() if r["path"] == "/v1/chat/completions"]
    assert first["tools"][0]["function"]["name"] == "calculator" and "Compute 6 times 7." in json.dumps(first)
    assert second["messages"][-1]["role"] == "tool" and second["messages"][-1]["content"] == "6*7 = 42"
    assert run.cost_usd > 0
    _adds_up(run)


def test_a_hierarchical_crew_on_the_fake_upstream_delegates_reviews_and_revises_once(acme, native):
    _org, client = acme
    crew = _crew(client, process="hierarchical", agents=[
        {"role": "mathematician", "goal": "Compute.", "tools": ["calculator"]},
        {"role": "poet", "goal": "Write verse."},
    ], tasks=[{"name": "compute", "description": "Compute {a} times 7."}])  # fmt: skip
    native.script(
        "fake-small",
        {"tool_calls": [{"name": "delegate_work", "arguments": {"member": "mathematician", "instructions": "Use it"}}]},
        {"reply": "About 40."},
        {"tool_calls": [{"name": "review_work", "arguments": {"verdict": "revise", "feedback": "Be exact."}}]},
        {"reply": "Exactly 42."},
    )  # fmt: skip
    run = _run_here(client, crew["id"], {"a": 6})
    assert run.status == "succeeded", run.error
    assert crew_runs.run_output(run) == "Exactly 42."
    plans = [s.data for s in RunStep.all_orgs.filter(run=run, kind="plan").order_by("seq")][1:]
    assert plans == [{"action": "delegate", "member": "mathematician"}, {"action": "review", "verdict": "revise"}]
    _adds_up(run)


def test_delegating_to_someone_outside_the_crew_fails_the_run_after_one_correction(acme, native):
    _org, client = acme
    crew = _crew(client, process="hierarchical", tasks=[{"name": "compute", "description": "Compute {a} times 7."}])
    bad = {"tool_calls": [{"name": "delegate_work", "arguments": {"member": "intern", "instructions": "x"}}]}
    native.script("fake-small", bad, bad)
    run = _run_here(client, crew["id"], {"a": 6})
    assert run.status == "failed" and run.error_code == "invalid_delegation"
    assert "'intern', who is not in the crew" in run.error
    assert len([r for r in native.requests() if r["path"] == "/v1/chat/completions"]) == 2
    _adds_up(run)


def test_an_unknown_tool_called_by_the_model_is_reported_to_it_and_the_run_goes_on(acme, native):
    _org, client = acme
    crew = _crew(client)
    native.script("fake-small", {"tool_calls": [{"name": "rm_rf", "arguments": {}}]}, {"reply": "42."})
    run = _run_here(client, crew["id"], {"a": 6})
    assert run.status == "succeeded"
    (result,) = RunStep.all_orgs.filter(run=run, kind="tool_result")
    assert result.data["ok"] is False and "Unknown tool 'rm_rf'" in crypto.decrypt(result.content_encrypted)


def test_the_budget_cap_stops_the_run_with_the_reason(acme, native):
    _org, client = acme
    crew = _crew(client, budget_usd="0.00001")
    native.script("fake-small", {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]})
    run = _run_here(client, crew["id"], {"a": 6})
    assert run.status == "failed" and run.error_code == "budget_exceeded"
    assert "Budget exceeded" in run.error and run.cost_usd >= Decimal("0.00001")
    # The first call went over: the tool it asked for was not run, and no second call was made.
    assert not RunStep.all_orgs.filter(run=run, kind="tool_result").exists()
    assert len([r for r in native.requests() if r["path"] == "/v1/chat/completions"]) == 1
    _adds_up(run)


SCHEMA = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "integer"}}}


@pytest.mark.parametrize(("replies", "status"), [(["not json", '{"answer": 42}'], "succeeded"),
                                                 (["not json", '{"answer": "42"}'], "failed")])  # fmt: skip
def test_a_json_output_is_validated_and_asked_for_once_more(acme, native, replies, status):
    _org, client = acme
    crew = _crew(client, agents=[{"role": "mathematician", "goal": "Compute."}], tasks=[
        {"name": "compute", "agent": "mathematician", "description": "Compute {a} times 7.", "output_format": "json",
         "output_schema": SCHEMA}])  # fmt: skip
    native.script("fake-small", *({"reply": r} for r in replies))
    run = _run_here(client, crew["id"], {"a": 6})
    assert run.status == status
    body = client.get(f"/api/v1/runs/{run.pk}").json()
    if status == "succeeded":
        assert body["output_json"] == {"answer": 42}
    else:
        assert body["error"]["code"] == "invalid_output" and "answer: '42' is not of type 'integer'" in run.error
    assert "not valid" in native.requests()[-1]["body"]["messages"][-1]["content"]
    _adds_up(run)


def test_an_upstream_failure_fails_the_run_with_its_reason(acme, native, settings):
    _org, client = acme
    crew = _crew(client)
    native.script("fake-small", *[{"status": 400, "code": "content_filter"}])
    run = _run_here(client, crew["id"], {"a": 6})
    assert run.status == "failed" and run.error_code == "content_filtered"
    _adds_up(run)


# --- Definitions, inputs, idempotency, cancel ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"tasks": [{"name": "t", "agent": "ghost", "description": "x"}]}, "tasks[0].agent", "No agent has the role"),
        ({"tasks": [{"name": "a", "agent": "mathematician", "description": "x", "context": ["b"]},
                    {"name": "b", "agent": "mathematician", "description": "y", "context": ["a"]}]},
         "tasks", "cycle"),
        ({"default_model": "gpt-9"}, "default_model", "does not exist"),
        ({"agents": [{"role": "m", "goal": "g", "tools": ["shell"]}],
          "tasks": [{"name": "t", "agent": "m", "description": "x"}]}, "agents[0].tools", "Unknown tool 'shell'"),
        ({"tasks": [{"name": "t", "agent": "mathematician", "description": "x", "output_format": "json"}]},
         "tasks[0].output_schema", "JSON Schema"),
        ({"tasks": [{"name": "t", "agent": "mathematician", "description": "{0}"}]}, "tasks[0].description",
         "not a placeholder"),
        ({"schedule": {"cron": "every monday", "enabled": True}}, "schedule.cron", "not a five-field cron"),
        ({"budget_usd": "0"}, "budget_usd", "positive number"),
    ],
)  # fmt: skip
def test_an_invalid_crew_is_refused_whole_with_each_problem_named(acme, models, change, field, message):
    _org, client = acme
    spec = {"name": "Calc", "default_model": "test-small",
            "agents": [{"role": "mathematician", "goal": "Compute exactly."}],
            "tasks": [{"name": "compute", "agent": "mathematician", "description": "Compute."}], **change}  # fmt: skip
    response = client.post("/api/v1/crews", spec, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_crew" and message in " ".join(error["details"][field])
    assert not Crew.all_orgs.exists()


def test_malformed_crews_get_the_shape_error(acme, models):
    _org, client = acme
    for body in ([], {"name": "x"}, {"name": "x", "agents": [], "tasks": []}, {"name": "x", "agents": [{"role": "a"}],
                 "tasks": [{"name": "bad name!", "description": "d"}]}, {"name": "x", "surprise": 1}):  # fmt: skip
        response = client.post("/api/v1/crews", body, format="json")
        assert response.status_code == 400 and response.json()["error"]["code"] in ("invalid", "validation_error")


def test_runs_need_their_inputs_and_refuse_unknown_ones(acme, native):
    _org, client = acme
    crew = _crew(client)
    response = _start(client, crew["id"], {})
    assert response.status_code == 400 and "inputs.a" in response.json()["error"]["details"]
    response = _start(client, crew["id"], {"a": 6, "b": 1})
    assert response.status_code == 400 and "takes no input 'b'" in response.json()["error"]["details"]["inputs.b"][0]
    assert not Run.all_orgs.exists()


def test_an_idempotency_key_returns_the_first_run(acme, native):
    _org, client = acme
    crew = _crew(client)
    first = _start(client, crew["id"], {"a": 6}, key="order-1")
    again = _start(client, crew["id"], {"a": 6}, key="order-1")
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"] and again["Idempotent-Replayed"] == "true"
    other = _start(client, crew["id"], {"a": 7}, key="order-1")
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert Run.all_orgs.count() == 1


def test_cancelling_a_queued_run_ends_it_and_a_finished_one_is_a_conflict(acme, native):
    org, client = acme
    crew = _crew(client)
    run_id = _start(client, crew["id"], {"a": 6}).json()["id"]
    response = client.post(f"/api/v1/runs/{run_id}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert crew_runs.run_execute(org_id=org.pk, run_id=run_id) is None  # a late delivery does nothing
    again = client.post(f"/api/v1/runs/{run_id}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "run_finished"


def test_another_orgs_crews_and_runs_are_not_found(acme, native):
    _org, client = acme
    crew = _crew(client)
    run_id = _start(client, crew["id"], {"a": 6}).json()["id"]
    other = key_client(issue_key(OrganizationFactory(), scopes=["read", "crews:run"]).secret)
    crew_path, run_path = f"/api/v1/crews/{crew['id']}", f"/api/v1/runs/{run_id}"
    routes = [("get", crew_path), ("post", f"{crew_path}/runs"), ("get", run_path), ("post", f"{run_path}/cancel"),
              ("get", f"{run_path}/events"), ("delete", crew_path)]  # fmt: skip
    for method, path in routes:
        response = getattr(other, method)(path, {}, format="json")
        assert response.status_code == 404, (method, path)
    assert client.get("/api/v1/runs").json()["results"][0]["id"] == run_id
    assert other.get("/api/v1/runs").json()["results"] == []


def test_a_crew_is_replaced_whole_and_runs_keep_the_definition_they_started_with(acme, native):
    _org, client = acme
    crew = _crew(client)
    run_id = _start(client, crew["id"], {"a": 6}).json()["id"]
    changed = {**crew, "name": "Calculator", "tasks": [{"name": "compute", "agent": "mathematician",
                                                        "description": "Compute {a} plus 1."}]}  # fmt: skip
    for field in ("id", "template", "inputs", "next_run_at", "created_at", "updated_at"):
        changed.pop(field)
    response = client.put(f"/api/v1/crews/{crew['id']}", changed, format="json")
    assert response.status_code == 200 and response.json()["tasks"][0]["description"] == "Compute {a} plus 1."
    assert Run.all_orgs.get(pk=run_id).definition["tasks"][0]["description"] == "Compute {a} times 7."
    assert client.delete(f"/api/v1/crews/{crew['id']}").status_code == 409  # a run is queued
