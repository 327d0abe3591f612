"""Crew runs in real Celery workers: sequential and hierarchical crews on the local engine and on the fake
upstream's function calling, the live event stream, a cancel mid-run, and a worker killed mid-run."""

import json
import signal
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest

from agents import crew_runs
from agents.models import Run, RunStep
from documents import services as documents
from documents.models import Document
from saas.llm import gateway
from saas.llm.models import LLMCall, ModelConfig
from saas.llm.registry import sync_registry
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import OrganizationFactory
from tests.agents.test_crews import _adds_up
from tests.conftest import BIN_DIR, LiveProcess, start_process, subprocess_env
from tests.llm.conftest import FakeControl

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

FINISHED = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def queue():
    """Runs started by these tests go to a queue only these tests' workers consume."""
    from saas.celery import app

    previous = app.conf.task_default_queue
    app.conf.task_default_queue = name = f"crewdesk-crews-{uuid.uuid4().hex[:8]}"
    yield name
    app.conf.task_default_queue = previous


def _worker(name: str, queue: str, fake_server, log_dir, **env: str) -> LiveProcess:
    environment = subprocess_env(LLM_OPENAI_BASE_URL=fake_server.base_url, LLM_OPENAI_API_KEY="sk-test",
                                 LLM_BACKOFF_BASE="0.01", LLM_BACKOFF_MAX="0.05", **env)  # fmt: skip
    return start_process(
        [str(BIN_DIR / "celery"), "-A", "saas", "worker", "--pool", "solo", "--without-gossip", "--without-mingle",
         "--loglevel", "INFO", "--hostname", f"{name}-{queue}@%h", "--queues", queue],
        log_dir / f"{name}.log", environment,
    )  # fmt: skip


@pytest.fixture(scope="module")
def worker(queue, fake_server, tmp_path_factory, django_db_setup):
    process = _worker("crews", queue, fake_server, tmp_path_factory.mktemp("crews"))
    yield process
    process.stop()


@pytest.fixture
def fake(fake_server, settings):
    """The fake upstream, configured here too: the API checks a crew's models against what is configured."""
    control = FakeControl(fake_server)
    control.reset()
    settings.LLM_UPSTREAMS = {"openai": {"base_url": fake_server.base_url, "api_key": "sk-test"}}
    gateway.reset_providers()
    yield control
    control.reset()
    gateway.reset_providers()


@pytest.fixture
def acme(db):
    sync_registry(ModelConfig)  # a flushed test database has lost the seeded registry
    ModelConfig.objects.create(alias="test-small", upstream="openai", upstream_model="fake-small", tier="small",
                               input_price_per_mtok=Decimal("1.00"), output_price_per_mtok=Decimal("2.00"),
                               context_window=8192, supports_tools=True)  # fmt: skip
    org = OrganizationFactory()
    return org, key_client(issue_key(org, scopes=["read", "documents:write", "crews:run"]).secret)


def _wait(run_id, statuses=FINISHED, timeout: float = 90.0, process: LiveProcess | None = None) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = Run.all_orgs.get(pk=run_id)
        if run.status in statuses:
            return run
        if process is not None:
            assert process.process.poll() is None, process.log()[-3000:]
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} stayed {run.status!r} past the deadline")


def _start(client, crew: dict, inputs: dict) -> str:
    created = client.post("/api/v1/crews", crew, format="json")
    assert created.status_code == 201, created.content
    started = client.post(f"/api/v1/crews/{created.json()['id']}/runs", {"inputs": inputs}, format="json")
    assert started.status_code == 202, started.content
    return started.json()["id"]


REFUNDS = (
    "# Refunds\n\nRefunds take 30 days from the purchase date.\n\n# Travel\n\nTrains are booked in second class.\n"
)
AGENTS = [
    {"role": "researcher", "goal": "Research facts in the org's documents.", "tools": ["search_documents"]},
    {"role": "writer", "goal": "Write a short answer for customers."},
]


@pytest.mark.parametrize("process", ["sequential", "hierarchical"])
def test_crews_run_in_a_worker_on_the_local_engine(worker, acme, process):
    org, client = acme
    document = documents.document_upload(org=org, data=REFUNDS.encode(), filename="policy.md")
    deadline = time.monotonic() + 60
    while Document.all_orgs.get(pk=document.pk).status != "ready":  # ingested by the same worker
        assert time.monotonic() < deadline, "the document was not ingested"
        time.sleep(0.2)
    tasks: list[dict[str, Any]] = [
        {"name": "facts", "description": "Research how long {thing} take."},
        {"name": "answer", "description": "Write an answer about how long {thing} take.", "context": ["facts"]},
    ]
    if process == "sequential":
        tasks[0]["agent"], tasks[1]["agent"] = "researcher", "writer"
    run_id = _start(client, {"name": "Desk", "process": process, "default_model": "local", "agents": AGENTS,
                             "tasks": tasks}, {"thing": "refunds"})  # fmt: skip
    run = _wait(run_id, process=worker)
    assert run.status == "succeeded", run.error
    assert "Refunds take 30 days from the purchase date. [1]" in crew_runs.run_output(run)
    plans = RunStep.all_orgs.filter(run=run, kind="plan").order_by("seq")
    delegated = [s.data["member"] for s in plans if s.data.get("action") == "delegate"]
    assert delegated == ([] if process == "sequential" else ["researcher", "writer"])
    _adds_up(run)


@pytest.mark.parametrize("process", ["sequential", "hierarchical"])
def test_crews_run_in_a_worker_with_function_calling(worker, acme, fake, process):
    _org, client = acme
    agents = [{"role": "mathematician", "goal": "Compute exactly.", "tools": ["calculator"]},
              {"role": "writer", "goal": "Write."}]  # fmt: skip
    task = {"name": "compute", "description": "Compute {a} times 7."}
    steps = [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]}, {"reply": "It is 42."}]
    if process == "sequential":
        task["agent"] = "mathematician"
    else:
        delegate = {"name": "delegate_work", "arguments": {"member": "mathematician", "instructions": "Be exact."}}
        review = {"name": "review_work", "arguments": {"verdict": "accept"}}
        steps = [{"tool_calls": [delegate]}, *steps, {"tool_calls": [review]}]
    fake.script("fake-small", *steps)
    run_id = _start(client, {"name": "Calc", "process": process, "default_model": "test-small", "agents": agents,
                             "tasks": [task]}, {"a": 6})  # fmt: skip
    run = _wait(run_id, process=worker)
    assert run.status == "succeeded", run.error
    assert crew_runs.run_output(run) == "It is 42."
    (result,) = RunStep.all_orgs.filter(run=run, kind="tool_result")
    assert json.loads(json.dumps(result.data))["ok"] is True
    assert run.cost_usd > 0 and run.prompt_tokens > 0
    _adds_up(run)


def test_the_events_stream_replays_then_follows_the_run_to_its_end(worker, acme, fake):
    _org, client = acme
    fake.config(token_rate=40)
    fake.script("fake-small", {"reply": "one two three four five six seven eight"})
    run_id = _start(client, {"name": "Talk", "default_model": "test-small",
                             "agents": [{"role": "talker", "goal": "Talk."}],
                             "tasks": [{"name": "talk", "agent": "talker", "description": "Say {n} words."}]},
                    {"n": 8})  # fmt: skip
    response = client.get(f"/api/v1/runs/{run_id}/events", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    events = []
    for chunk in response.streaming_content:
        for block in chunk.decode().split("\n\n"):
            if block.startswith("data: "):
                events.append(json.loads(block[6:]))
    assert events[0]["type"] == "run"
    tokens = "".join(e["text"] for e in events if e["type"] == "token")
    assert tokens == "one two three four five six seven eight"
    steps = [e["step"] for e in events if e["type"] == "step"]
    assert [s["seq"] for s in steps] == list(range(1, len(steps) + 1))  # none missed, none twice
    assert [s["kind"] for s in steps][-1] == "output"
    assert events[-1] == {"type": "status", "status": "succeeded", "error": None}


def test_cancel_mid_run_stops_it_and_no_further_call_is_made(worker, acme, fake):
    _org, client = acme
    fake.config(token_rate=5)  # a slow answer: the cancel lands in the middle of the stream
    words = " ".join(f"word{i}" for i in range(200))
    fake.script("fake-small", {"reply": words})
    run_id = _start(client, {"name": "Slow", "default_model": "test-small",
                             "agents": [{"role": "talker", "goal": "Talk."}],
                             "tasks": [{"name": "one", "agent": "talker", "description": "Talk about {x}."},
                                       {"name": "two", "agent": "talker", "description": "Talk more.",
                                        "context": ["one"]}]}, {"x": "cats"})  # fmt: skip
    deadline = time.monotonic() + 30
    while not [r for r in fake.requests() if r["path"] == "/v1/chat/completions"]:
        assert time.monotonic() < deadline, "the run never called the model"
        time.sleep(0.05)
    time.sleep(0.5)  # a few tokens in
    response = client.post(f"/api/v1/runs/{run_id}/cancel")
    assert response.status_code == 202 and response.json()["cancel_requested"] is True
    run = _wait(run_id, timeout=15, process=worker)  # "within a few seconds": a 200-token answer takes 40 s
    assert run.status == "cancelled" and run.error_code == "cancelled"
    calls_at_cancel = len([r for r in fake.requests() if r["path"] == "/v1/chat/completions"])
    time.sleep(1.5)
    assert len([r for r in fake.requests() if r["path"] == "/v1/chat/completions"]) == calls_at_cancel == 1
    (call,) = LLMCall.all_orgs.filter(trace_id=run_id)
    assert call.status == "cancelled"  # the in-flight stream was closed and recorded as such
    assert not RunStep.all_orgs.filter(run=run, kind="output").exists()
    _adds_up(run)


def test_a_worker_killed_mid_run_is_resumed_after_its_last_finished_task(acme, fake, fake_server, tmp_path, settings):
    """SIGKILL while the second of three tasks is running: the watchdog queues the run again, another worker
    resumes it at the second task (the first is not redone), and it succeeds on its second attempt."""
    from saas.celery import app

    _org, client = acme
    previous = app.conf.task_default_queue
    app.conf.task_default_queue = queue = f"crewdesk-kill-{uuid.uuid4().hex[:8]}"  # not the module's worker
    try:
        _kill_and_resume(client, fake, fake_server, queue, tmp_path, settings)
    finally:
        app.conf.task_default_queue = previous


def _kill_and_resume(client, fake, fake_server, queue, tmp_path, settings):
    fake.config(token_rate=20)
    fake.script("fake-small", {"reply": "first output"}, {"reply": " ".join(["second"] * 100)})
    first = _worker("first", queue, fake_server, tmp_path)
    try:
        run_id = _start(client, {"name": "Three", "default_model": "test-small",
                                 "agents": [{"role": "talker", "goal": "Talk."}],
                                 "tasks": [{"name": f"t{i}", "agent": "talker", "description": f"Part {i} on {{x}}."}
                                           for i in range(3)]}, {"x": "cats"})  # fmt: skip
        deadline = time.monotonic() + 60
        while len([r for r in fake.requests() if r["path"] == "/v1/chat/completions"]) < 2:
            assert time.monotonic() < deadline and first.process.poll() is None, first.log()[-3000:]
            time.sleep(0.05)
        time.sleep(0.5)  # in the middle of the second task's answer
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
    finally:
        first.stop()

    run = Run.all_orgs.get(pk=run_id)
    assert run.status == "running" and run.attempts == 1
    assert list(RunStep.all_orgs.filter(run=run, kind="output").values_list("task_name", flat=True)) == ["t0"]
    settings.AGENTS_RUN_STALLED_AFTER = 0
    assert crew_runs.runs_recover_stalled()["requeued"] == 1

    fake.config(token_rate=0)
    second = _worker("second", queue, fake_server, tmp_path)
    try:
        run = _wait(run_id, process=second)
    finally:
        second.stop()
    assert run.status == "succeeded", run.error
    assert run.attempts == 2
    outputs = list(RunStep.all_orgs.filter(run=run, kind="output").order_by("seq").values_list("task_name", "attempt"))
    assert outputs == [("t0", 1), ("t1", 2), ("t2", 2)]  # the first task was not redone
    _adds_up(run)


def test_a_long_model_call_keeps_its_run_alive(acme, fake, fake_server, tmp_path, settings):
    """The worker renews the heartbeat while a call takes longer than the stall limit: the watchdog leaves the
    run alone, and it finishes on its first attempt."""
    from saas.celery import app

    _org, client = acme
    previous = app.conf.task_default_queue
    app.conf.task_default_queue = queue = f"crewdesk-long-{uuid.uuid4().hex[:8]}"
    worker = _worker("patient", queue, fake_server, tmp_path, AGENTS_RUN_STALLED_AFTER="2")
    try:
        fake.script("fake-small", {"delay": 6, "reply": "Finally."})
        run_id = _start(client, {"name": "Slow", "default_model": "test-small",
                                 "agents": [{"role": "talker", "goal": "Talk."}],
                                 "tasks": [{"name": "one", "agent": "talker", "description": "Talk about {x}."}]},
                        {"x": "cats"})  # fmt: skip
        deadline = time.monotonic() + 30
        while not [r for r in fake.requests() if r["path"] == "/v1/chat/completions"]:
            assert time.monotonic() < deadline and worker.process.poll() is None, worker.log()[-3000:]
            time.sleep(0.05)
        time.sleep(3.5)  # the call is in flight, longer than the 2 s stall limit
        settings.AGENTS_RUN_STALLED_AFTER = 2
        assert crew_runs.runs_recover_stalled()["requeued"] == 0
        run = _wait(run_id, process=worker)
    finally:
        worker.stop()
        app.conf.task_default_queue = previous
    assert run.status == "succeeded" and run.attempts == 1 and crew_runs.run_output(run) == "Finally."
