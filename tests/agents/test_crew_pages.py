"""The crew pages: the list (search, pages, a Run button with its inputs), a run's page (rendered output, the
engine named, time and cost per agent, retry), two runs compared; every route scoped to the org."""

from decimal import Decimal

import pytest

from accounts.permissions import principal_for_member
from agents import crew_runs, services
from agents.models import Crew, Run, RunStep
from saas.core import crypto
from tests.accounts.factories import OrganizationFactory

pytestmark = pytest.mark.django_db

SPEC = {
    "name": "Digest", "process": "sequential", "default_model": "local",
    "agents": [{"role": "writer", "goal": "Write."}],
    "tasks": [{"name": "digest", "agent": "writer", "description": "Summarise {topic} for {audience}."}],
}  # fmt: skip


@pytest.fixture
def team(make_member, client):
    org = OrganizationFactory()
    member = make_member(org, role="member")
    client.force_login(member.user)
    return org, member, client


def _crew(member, **changes) -> Crew:
    return services.crew_create(principal=_principal(member), spec={**SPEC, **changes})


def _principal(member):
    return principal_for_member(member)


def _finished_run(crew: Crew, *, output: str, status: str = "succeeded", inputs=None) -> Run:
    run, _ = crew_runs.run_start(crew=crew, inputs=inputs or {"topic": "refunds", "audience": "customers"})
    run.status, run.output_encrypted = status, crypto.encrypt(output)
    run.started_at = run.created_at
    run.finished_at = run.created_at
    run.save()
    org = crew.organization
    for seq, (kind, role, task, content, data, latency, cost) in enumerate([
        ("message", "writer", "digest", "draft", {"model": "local", "engine": "local-extractive"}, 1200, "0.001"),
        ("message", "editor", "digest", "edit", {"model": "local", "engine": "local-extractive"}, 300, "0.004"),
        ("output", "writer", "digest", output, {}, 0, "0"),
    ], start=1):  # fmt: skip
        RunStep.objects.for_org(org).create(
            organization=org, run=run, seq=seq, kind=kind, agent_role=role, task_name=task,
            content_encrypted=crypto.encrypt(content), data=data, latency_ms=latency, cost_usd=Decimal(cost),
            prompt_tokens=10, completion_tokens=5,
        )  # fmt: skip
    return run


# --- The list -----------------------------------------------------------------------------------------------


def test_the_crew_list_is_searched_and_paged_on_the_server(team):
    org, member, client = team
    for n in range(22):
        _crew(member, name=f"Brief {n:02d}")
    _crew(member, name="Weekly digest", description="Every Monday.")
    other = OrganizationFactory()
    Crew.objects.for_org(other).create(organization=other, name="Brief of another team")
    base = f"/o/{org.slug}/crews/"
    first = client.get(base).content.decode()
    assert first.count("<tr data-crew=") == 20 and "Page 1 of 2 · 23 crews" in first
    assert client.get(base, {"page": 2}).content.decode().count("<tr data-crew=") == 3
    found = client.get(base, {"q": "monday"}).content.decode()
    assert found.count("<tr data-crew=") == 1 and "Weekly digest" in found
    assert "another team" not in client.get(base, {"q": "brief", "page": 2}).content.decode()
    assert "No crew matches" in client.get(base, {"q": "zebra"}).content.decode()


def test_the_run_button_asks_for_the_inputs_and_starts_the_run(team):
    org, member, client = team
    crew = _crew(member)
    plain = _crew(member, name="Plain", tasks=[{"name": "t", "agent": "writer", "description": "Write a haiku."}])
    page = client.get(f"/o/{org.slug}/crews/").content.decode()
    assert f'id="run-{crew.pk}-topic"' in page and f'id="run-{crew.pk}-audience"' in page
    assert f'action="/o/{org.slug}/crews/{plain.pk}/run/"' in page and f'id="run-{plain.pk}-' not in page

    refused = client.post(f"/o/{org.slug}/crews/{crew.pk}/run/", {"input-topic": "refunds"}, follow=True)
    assert "The run&#x27;s inputs are not valid." in refused.content.decode() and not Run.objects.for_org(org).exists()
    form = {"input-topic": "refunds", "input-audience": "customers", "idempotency_key": "k1"}
    started = client.post(f"/o/{org.slug}/crews/{crew.pk}/run/", form)
    run = Run.objects.for_org(org).get()
    assert started.status_code == 302 and started["Location"] == f"/o/{org.slug}/runs/{run.pk}/"
    assert run.inputs == {"topic": "refunds", "audience": "customers"} and run.started_by == member.user
    again = client.post(f"/o/{org.slug}/crews/{crew.pk}/run/", form)
    assert again["Location"] == started["Location"] and Run.objects.for_org(org).count() == 1  # a double click


def test_another_orgs_crew_and_runs_are_not_found_on_the_new_routes(team, make_member):
    org, member, client = team
    other = OrganizationFactory()
    theirs = _crew(make_member(other, role="member"))
    their_run = _finished_run(theirs, output="Theirs.")
    mine = _finished_run(_crew(member), output="Mine.")
    assert client.post(f"/o/{org.slug}/crews/{theirs.pk}/run/", {"input-topic": "x"}).status_code == 404
    assert client.post(f"/o/{org.slug}/runs/{their_run.pk}/retry/").status_code == 404
    assert client.get(f"/o/{org.slug}/runs/compare/", {"run": [mine.pk, their_run.pk]}).status_code == 404
    assert client.get(f"/o/{org.slug}/runs/compare/", {"run": [mine.pk, "not-a-uuid"]}).status_code == 404
    assert client.get(f"/o/{other.slug}/runs/{their_run.pk}/").status_code in (403, 404)  # not their member
    assert Run.all_orgs.count() == 2


def test_a_viewer_cannot_run_or_retry(make_member, client):
    org = OrganizationFactory()
    run = _finished_run(_crew(make_member(org, role="member")), output="Done.")
    client.force_login(make_member(org, role="viewer").user)
    assert 'id="retry-run"' not in client.get(f"/o/{org.slug}/runs/{run.pk}/").content.decode()
    assert client.post(f"/o/{org.slug}/runs/{run.pk}/retry/").status_code == 403
    assert client.post(f"/o/{org.slug}/crews/{run.crew_id}/run/").status_code == 403
    assert Run.all_orgs.count() == 1


# --- A run's page --------------------------------------------------------------------------------------------


def test_the_run_page_renders_the_output_names_the_engine_and_charts_time_and_cost(team):
    org, member, client = team
    output = "**Refunds** take 30 days.\n\n- one\n- two\n\n<img src=x onerror=alert(1)>"
    run = _finished_run(_crew(member), output=output)
    page = client.get(f"/o/{org.slug}/runs/{run.pk}/").content.decode()
    assert '<div id="run-output" class="md"><p><strong>Refunds</strong> take 30 days.</p>' in page
    shown = page.split('id="run-output"')[1].split("</div>")[0]
    assert "<img" not in shown and "&lt;img src=x onerror=alert(1)&gt;" in shown  # raw HTML stays text
    assert 'Answered by <strong class="engine">the offline extractive engine' in page
    by_agent = page.split('id="by-agent"')[1].split("</table>")[0]
    assert "<td>writer</td>" in by_agent and "1200 ms" in by_agent and "$0.00100000" in by_agent
    assert '<rect width="100.0"' in by_agent and '<rect width="25.0"' in by_agent  # editor: a quarter of the time
    assert 'id="retry-run"' in page and "Run again with the same inputs" in page
    body = client.get(f"/api/v1/runs/{run.pk}", HTTP_X_CREWDESK_ORG=str(org.pk)).json()
    label = "the offline extractive engine (it quotes your documents; not a generative model)"
    assert body["engines"] == [{"model": "local", "engine": "local-extractive", "label": label}]
    assert {a["name"]: a["duration_ms"] for a in body["breakdown"]["agents"]} == {"writer": 1200, "editor": 300}


def test_a_failed_run_is_retried_with_its_inputs_and_a_running_one_is_not(team):
    org, member, client = team
    crew = _crew(member)
    failed = _finished_run(crew, output="", status="failed", inputs={"topic": "moon", "audience": "kids"})
    response = client.post(f"/o/{org.slug}/runs/{failed.pk}/retry/", {"idempotency_key": "r1"})
    retried = Run.objects.for_org(org).exclude(pk=failed.pk).get()
    assert response["Location"] == f"/o/{org.slug}/runs/{retried.pk}/"
    assert retried.inputs == {"topic": "moon", "audience": "kids"} and retried.status == "queued"
    refused = client.post(f"/o/{org.slug}/runs/{retried.pk}/retry/", follow=True)
    assert "has not finished yet" in refused.content.decode() and Run.objects.for_org(org).count() == 2


def test_two_runs_are_compared_side_by_side(team):
    org, member, client = team
    crew = _crew(member)
    first = _finished_run(crew, output="Refunds take **30 days**.")
    second = _finished_run(crew, output="Refunds take **14 days**.", status="failed")
    page = client.get(f"/o/{org.slug}/runs/compare/", {"run": [second.pk, first.pk]})
    html = page.content.decode()
    assert page.status_code == 200
    assert html.index("<strong>30 days</strong>") < html.index("<strong>14 days</strong>")  # older on the left
    assert html.count('class="compare-side md output"') == 2 and "<h3>digest</h3>" in html
    assert client.get(f"/o/{org.slug}/runs/compare/", {"run": [first.pk]}).status_code == 400
    detail = client.get(f"/o/{org.slug}/runs/{second.pk}/").content.decode()
    assert f"?run={first.pk}&amp;run={second.pk}" in detail  # compare with the previous run
    history = client.get(f"/o/{org.slug}/crews/{crew.pk}/").content.decode()
    assert history.count('name="run" value=') == 2
    assert client.get(f"/o/{org.slug}/crews/{crew.pk}/", {"status": "failed"}).content.decode().count(
        'name="run" value=') == 1  # fmt: skip


# --- Schedule inputs --------------------------------------------------------------------------------------


def test_schedule_inputs_are_checked_when_the_crew_is_saved(team):
    _org, member, _client = team
    schedule = {"cron": "0 8 * * 1", "enabled": True}
    with pytest.raises(Exception) as blank:
        _crew(member, schedule={**schedule, "inputs": {"topic": "refunds", "audience": " "}})
    assert list(blank.value.details) == ["schedule.inputs.audience"]
    with pytest.raises(Exception) as unknown:
        _crew(member, schedule={**schedule, "inputs": {"topic": "a", "audience": "b", "tone": "dry"}})
    assert "No task uses {tone}" in unknown.value.details["schedule.inputs.tone"][0]
    crew = _crew(member, schedule={**schedule, "inputs": {"topic": "refunds", "audience": "customers"}})
    assert crew.schedule_enabled and crew.schedule_inputs == {"topic": "refunds", "audience": "customers"}
