"""Schedules (cron through beat), notifications of scheduled runs, and the watchdog's limits."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import Notification
from agents import crew_runs
from agents.models import Crew, Run
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import MembershipFactory, OrganizationFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def scheduled(db):
    org = OrganizationFactory()
    members = [MembershipFactory(organization=org), MembershipFactory(organization=org, role="viewer")]
    client = key_client(issue_key(org, scopes=["read", "crews:run"]).secret)
    response = client.post("/api/v1/crews", {
        "name": "Digest", "default_model": "local", "schedule": {"cron": "0 8 * * 1", "enabled": True,
                                                                  "inputs": {"topic": "refunds"}},
        # something to answer from: a run that found nothing fails (agents.engine), and these runs should finish
        "agents": [{"role": "writer", "goal": "Write.",
                    "instructions": "Refunds take 30 days from the purchase date."}],
        "tasks": [{"name": "digest", "agent": "writer", "description": "Summarise {topic}."}],
    }, format="json")  # fmt: skip
    assert response.status_code == 201, response.content
    return org, members, Crew.all_orgs.get(pk=response.json()["id"])


def test_a_due_schedule_starts_one_run_per_slot_and_moves_to_the_next(scheduled):
    _org, _, crew = scheduled
    slot = crew.next_run_at
    assert slot.weekday() == 0 and (slot.hour, slot.minute) == (8, 0) and slot > timezone.now()
    assert crew_runs.runs_start_scheduled(now=slot - timedelta(seconds=1)) == 0  # not yet
    assert crew_runs.runs_start_scheduled(now=slot + timedelta(minutes=1)) == 1
    run = Run.all_orgs.get(crew=crew)
    assert run.trigger == "schedule" and run.inputs == {"topic": "refunds"} and run.status == "queued"
    crew.refresh_from_db()
    assert crew.next_run_at == slot + timedelta(days=7)
    assert crew_runs.runs_start_scheduled(now=slot + timedelta(minutes=2)) == 0  # the slot is done
    assert Run.all_orgs.filter(crew=crew).count() == 1


def test_a_schedule_missing_its_inputs_is_refused(db):
    client = key_client(issue_key(OrganizationFactory(), scopes=["read", "crews:run"]).secret)
    response = client.post("/api/v1/crews", {
        "name": "Digest", "default_model": "local", "schedule": {"cron": "0 8 * * 1", "enabled": True},
        "agents": [{"role": "writer", "goal": "Write."}],
        "tasks": [{"name": "digest", "agent": "writer", "description": "Summarise {topic}."}],
    }, format="json")  # fmt: skip
    assert response.status_code == 400
    assert "{topic}" in response.json()["error"]["details"]["schedule.inputs.topic"][0]


def test_a_finished_scheduled_run_notifies_every_member(scheduled):
    org, members, crew = scheduled
    crew_runs.runs_start_scheduled(now=crew.next_run_at + timedelta(minutes=1))
    run = Run.all_orgs.get(crew=crew)
    assert crew_runs.run_execute(org_id=org.pk, run_id=run.pk) == "succeeded"
    notes = Notification.all_orgs.filter(organization=org)
    assert {n.user_id for n in notes} == {m.user_id for m in members}
    assert all(n.title == "Scheduled run of Digest finished" and str(run.pk) in n.url for n in notes)


def test_the_watchdog_requeues_a_stalled_run_then_gives_up_with_the_reason(scheduled, settings):
    _org, _, crew = scheduled
    run, _ = crew_runs.run_start(crew=crew, inputs={"topic": "refunds"})
    stale = timezone.now() - timedelta(hours=1)
    Run.all_orgs.filter(pk=run.pk).update(status="running", heartbeat_at=stale, attempts=1)
    assert crew_runs.runs_recover_stalled() == {"requeued": 1, "failed": 0, "cancelled": 0}
    run.refresh_from_db()
    assert run.status == "queued" and run.lease is None

    Run.all_orgs.filter(pk=run.pk).update(
        status="running", heartbeat_at=stale, attempts=settings.AGENTS_RUN_MAX_ATTEMPTS
    )
    assert crew_runs.runs_recover_stalled()["failed"] == 1
    run.refresh_from_db()
    assert run.status == "failed" and run.error_code == "worker_lost" and "gave up" in run.error
    # A live run (fresh heartbeat) is left alone.
    fresh, _ = crew_runs.run_start(crew=crew, inputs={"topic": "x"})
    Run.all_orgs.filter(pk=fresh.pk).update(status="running", heartbeat_at=timezone.now(), attempts=1)
    assert crew_runs.runs_recover_stalled() == {"requeued": 0, "failed": 0, "cancelled": 0}


def test_a_cancel_requested_while_the_worker_was_lost_ends_the_run_cancelled(scheduled):
    org, _, crew = scheduled
    run, _ = crew_runs.run_start(crew=crew, inputs={"topic": "refunds"})
    Run.all_orgs.filter(pk=run.pk).update(status="running", heartbeat_at=timezone.now() - timedelta(hours=1),
                                          attempts=1)  # fmt: skip
    crew_runs.run_cancel(org=org, run_id=run.pk)
    assert crew_runs.runs_recover_stalled()["cancelled"] == 1
    run.refresh_from_db()
    assert run.status == "cancelled"


def test_members_see_the_notification_in_their_bell_as_unread_until_they_open_it(scheduled, client):
    org, members, crew = scheduled
    crew_runs.runs_start_scheduled(now=crew.next_run_at + timedelta(minutes=1))
    crew_runs.run_execute(org_id=org.pk, run_id=Run.all_orgs.get(crew=crew).pk)
    client.force_login(members[1].user)
    page = client.get(f"/o/{org.slug}/").content.decode()
    assert "Scheduled run of Digest finished" in page and "Notifications: 1 unread</span>" in page
    assert "Notifications: 1 unread</span>" in client.get(f"/o/{org.slug}/").content.decode()  # still
    note = Notification.objects.for_org(org).get(user=members[1].user)
    client.post(f"/o/{org.slug}/notifications/{note.pk}/open/")
    again = client.get(f"/o/{org.slug}/").content.decode()
    assert "Scheduled run of Digest finished" in again and "Notifications: 0 unread</span>" in again
