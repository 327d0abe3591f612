"""Crew runs in Celery: thin. Claiming makes a re-delivered or duplicated task harmless (agents.services)."""

from contextlib import suppress

from celery import shared_task
from django.conf import settings
from django.db import DatabaseError
from redis.exceptions import RedisError

from agents import crew_runs, titles
from saas.core.tenancy import org_scope

MAX_RETRIES = 2


@shared_task(
    name="agents.run_crew",
    bind=True,
    acks_late=True,  # a worker that dies mid-run leaves the message to be delivered again
    reject_on_worker_lost=True,
    max_retries=MAX_RETRIES,
    soft_time_limit=settings.AGENTS_RUN_SOFT_TIME_LIMIT,
    time_limit=settings.AGENTS_RUN_TIME_LIMIT,
)
def run_crew(self, org_id: str, run_id: str) -> str | None:  # type: ignore[no-untyped-def]
    with org_scope(org_id):
        try:
            return crew_runs.run_execute(org_id=org_id, run_id=run_id)
        except (DatabaseError, RedisError) as exc:  # the database or Redis is unavailable for now
            if self.request.retries >= MAX_RETRIES:
                raise  # the watchdog fails or resumes the run once the stores are back
            with suppress(DatabaseError):  # still down: the watchdog will find the run without a heartbeat
                crew_runs.run_release(org_id=org_id, run_id=run_id)
            raise self.retry(exc=exc, countdown=2 ** (self.request.retries + 2)) from exc


@shared_task(name="agents.recover_stalled_runs", ignore_result=True)
def recover_stalled_runs() -> dict[str, int]:
    return crew_runs.runs_recover_stalled()


@shared_task(name="agents.start_scheduled_runs", ignore_result=True)
def start_scheduled_runs() -> int:
    return crew_runs.runs_start_scheduled()


@shared_task(name="agents.title_conversation", ignore_result=True, soft_time_limit=60, time_limit=90)
def title_conversation(org_id: str, conversation_id: str, answer_id: str) -> None:
    """A short title for a conversation's first exchange (agents/titles.py: it checks it is still wanted)."""
    titles.conversation_title_summarise(org_id=org_id, conversation_id=conversation_id, answer_id=answer_id)
