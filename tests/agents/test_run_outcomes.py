"""How a run ends when its tasks found nothing: failed with the reason (in the engine, so the API, the page and
a schedule's notification all say so), the output kept for the reader."""

import pytest

from agents import crew_runs
from agents.models import Run
from tests.agents.test_crews import _run_here, _with_policy, acme  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db


def test_a_run_whose_tasks_found_nothing_fails_with_the_reason(acme):  # noqa: F811
    _org, client = acme  # no documents: every task of the research brief has nothing to quote
    crew = client.post("/api/v1/crew-starters", {"starter": "research-brief"}, format="json").json()
    run = _run_here(client, crew["id"], {"topic": "the moon landing"})
    assert run.status == Run.Status.FAILED
    assert run.error_code == "no_answer"
    assert "No task produced a usable answer" in run.error
    body = client.get(f"/api/v1/runs/{run.pk}").json()
    assert body["status"] == "failed" and body["error"]["code"] == "no_answer"
    assert body["output"] == crew_runs.run_output(run) and body["output"]  # what it said is kept


def test_a_run_with_a_usable_answer_still_succeeds(acme):  # noqa: F811
    org, client = acme
    _with_policy(org, client)
    crew = client.post("/api/v1/crew-starters", {"starter": "research-brief"}, format="json").json()
    run = _run_here(client, crew["id"], {"topic": "how long refunds take"})
    assert run.status == Run.Status.SUCCEEDED, run.error
