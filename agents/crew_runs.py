"""Crew runs: starting one (inputs checked, idempotency keys, the plan's limits), the Celery task's claim and
lease with a heartbeat, cancelling, retrying, the stalled-run watchdog and scheduled runs. Crews themselves are
agents/services.py's."""

import json
import logging
import threading
import uuid
from contextlib import suppress
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, IntegrityError, connections, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.crypto import salted_hmac
from redis.exceptions import RedisError

from accounts.services import notify_members
from agents import definitions, engine, run_events
from agents.models import Crew, Run
from agents.services import crew_spec, next_schedule_slot
from saas.core import crypto
from saas.core.errors import ApplicationError, Conflict, NotFound
from saas.core.redis import get_redis

logger = logging.getLogger(__name__)


MAX_INPUTS = 50
MAX_INPUT_CHARS = definitions.MAX_INPUT_CHARS


def run_get(*, org: Any, run_id: Any) -> Run:
    run = Run.objects.for_org(org).select_related("crew").filter(pk=run_id).first()
    if run is None:
        raise NotFound("No such run.")
    return run


def run_output(run: Run) -> str:
    return crypto.decrypt(run.output_encrypted)


def _check_inputs(definition: dict[str, Any], inputs: Any) -> dict[str, str]:
    if not isinstance(inputs, dict) or len(inputs) > MAX_INPUTS:
        raise ApplicationError(f"`inputs` is an object of at most {MAX_INPUTS} values.", code="invalid")
    needed = definitions.inputs_needed(definition)
    problems: dict[str, list[str]] = {}
    for name, value in inputs.items():
        if name not in needed:
            problems[f"inputs.{name}"] = [
                f"This crew takes no input {name!r}; it takes: {', '.join(needed) or 'none'}."
            ]
        elif not isinstance(value, str | int | float) or isinstance(value, bool) or len(str(value)) > MAX_INPUT_CHARS:
            problems[f"inputs.{name}"] = [f"An input is a string or a number of at most {MAX_INPUT_CHARS} characters."]
    for name in needed:
        if name not in inputs or not str(inputs[name]).strip():
            problems[f"inputs.{name}"] = ["This input is required (its task descriptions use it)."]
    if problems:
        raise ApplicationError("The run's inputs are not valid.", code="invalid_inputs", details=problems)
    return {name: str(value) for name, value in inputs.items()}


def run_start(
    *, crew: Crew, inputs: Any, user: Any = None, api_key: Any = None, idempotency_key: str = "",
    trigger: str = Run.Trigger.MANUAL,
) -> tuple[Run, bool]:  # fmt: skip
    """(the run, whether it was created now). An idempotency key already used with the same crew and inputs
    gives back the first run; with anything else it is a conflict."""
    org = crew.organization
    request_hash = run_request_hash(crew.pk, inputs)
    if idempotency_key:
        existing = _run_for_key(org, idempotency_key, request_hash)
        if existing is not None:
            return existing, False
    definition = definitions.check(org=org, spec=crew_spec(crew))
    checked = _check_inputs(definition, inputs if inputs is not None else {})
    try:
        with transaction.atomic():
            run = Run.objects.for_org(org).create(
                organization=org, crew=crew, definition=run_definition(definition, crew.pk), inputs=checked,
                trigger=trigger, started_by=user, api_key=api_key, idempotency_key=idempotency_key,
                request_hash=request_hash,
            )  # fmt: skip
            transaction.on_commit(partial(_enqueue_run, run))
    except IntegrityError:
        existing = _run_for_key(org, idempotency_key, request_hash) if idempotency_key else None
        if existing is None:
            raise
        return existing, False
    return run, True


def run_retry(*, org: Any, run_id: Any, user: Any = None, api_key: Any = None, idempotency_key: str = "") -> Run:
    """A new run of the same crew with the same inputs (the crew as it is now: an edit since is used). Only a
    finished run is retried; one still queued or running is a conflict."""
    previous = run_get(org=org, run_id=run_id)
    if previous.status not in Run.FINISHED:
        raise Conflict("This run has not finished yet: cancel it, or wait for it.", code="run_not_finished")
    run, _ = run_start(crew=previous.crew, inputs=previous.inputs or {}, user=user, api_key=api_key,
                       idempotency_key=idempotency_key)  # fmt: skip
    return run


def run_definition(definition: dict[str, Any], crew_id: Any) -> dict[str, Any]:
    """What a run keeps of its crew: the definition without the schedule (whose inputs are encrypted on the
    crew, and which a run does not use)."""
    return {**{k: v for k, v in definition.items() if k != "schedule"}, "crew_id": str(crew_id)}


def run_request_hash(crew_id: Any, inputs: Any) -> str:
    """Tells a retried start from a different one under the same Idempotency-Key. Keyed (an HMAC with the
    SECRET_KEY), so that it cannot confirm a guess of the inputs, which are encrypted."""
    payload = json.dumps([str(crew_id), inputs], sort_keys=True, default=str)
    return salted_hmac("crewdesk.agents.run_request", payload, algorithm="sha256").hexdigest()


def _run_for_key(org: Any, key: str, request_hash: str) -> Run | None:
    existing = Run.objects.for_org(org).filter(idempotency_key=key).first()
    if existing is not None and existing.request_hash != request_hash:
        raise Conflict("This Idempotency-Key was used for a different request.", code="idempotency_key_reused")
    return existing


def _enqueue_run(run: Run) -> None:
    from agents.tasks import run_crew

    run_crew.delay(str(run.organization_id), str(run.pk))


@transaction.atomic
def run_cancel(*, org: Any, run_id: Any) -> Run:
    run = Run.objects.for_org(org).select_for_update().filter(pk=run_id).first()
    if run is None:
        raise NotFound("No such run.")
    if run.status in Run.FINISHED:
        raise Conflict(f"This run has already finished ({run.status}).", code="run_finished")
    if run.status == Run.Status.QUEUED:
        _run_finish(run, Run.Status.CANCELLED, code="cancelled", error="Cancelled before it started.")
        return run
    run.cancel_requested_at = timezone.now()
    run.save(update_fields=["cancel_requested_at", "updated_at"])
    transaction.on_commit(lambda: get_redis().set(engine.cancel_key(run.pk), 1, ex=24 * 3600))
    return run


def _run_finish(run: Run, status: str, *, output: str = "", code: str = "", error: str = "") -> None:
    """Record the end (the caller holds the row lock or the lease), tell the readers, notify for schedules."""
    run.status, run.error_code, run.error = status, code[:40], error[:1000]
    run.output_encrypted = crypto.encrypt(output)
    run.finished_at = timezone.now()
    run.lease = None
    run.save(update_fields=["status", "error_code", "error_encrypted", "output_encrypted", "finished_at", "lease",
                            "updated_at"])  # fmt: skip
    event = {"type": "status", "status": status, "error": {"code": code, "message": error} if code else None}
    transaction.on_commit(lambda: run_events.publish(run.pk, event))
    if run.trigger == Run.Trigger.SCHEDULE:
        crew_name = run.definition.get("name", "A crew")
        outcome = {"succeeded": "finished", "failed": "failed", "cancelled": "was cancelled"}[status]
        notify_members(org=run.organization, title=f"Scheduled run of {crew_name} {outcome}",
                       url=f"/o/{run.organization.slug}/runs/{run.pk}/")  # fmt: skip


def run_claim(*, org_id: Any, run_id: Any) -> tuple[Run, uuid.UUID] | None:
    """Take the run for this delivery of the task, or None when there is nothing to do (finished, or running
    elsewhere with a fresh heartbeat). A cancel requested meanwhile ends it here."""
    now = timezone.now()
    with transaction.atomic():
        run = (
            Run.objects.for_org(org_id)
            .select_for_update(of=("self",))
            .select_related("organization")
            .filter(pk=run_id)
            .first()
        )
        if run is None or run.status in Run.FINISHED:
            return None
        stale = now - timedelta(seconds=settings.AGENTS_RUN_STALLED_AFTER)
        if run.status == Run.Status.RUNNING and run.heartbeat_at and run.heartbeat_at > stale:
            return None
        if run.cancel_requested_at is not None:
            _run_finish(run, Run.Status.CANCELLED, code="cancelled", error="Cancelled.")
            return None
        if run.attempts >= settings.AGENTS_RUN_MAX_ATTEMPTS:
            _run_finish(run, Run.Status.FAILED, code="worker_lost", error=_gave_up(run.attempts))
            return None
        lease = uuid.uuid4()
        run.status, run.lease, run.heartbeat_at = Run.Status.RUNNING, lease, now
        run.attempts += 1
        run.started_at = run.started_at or now
        run.save(update_fields=["status", "lease", "heartbeat_at", "attempts", "started_at", "updated_at"])
    run_events.publish(run.pk, {"type": "status", "status": "running", "attempt": run.attempts})
    return run, lease


def _gave_up(attempts: int) -> str:
    return f"The worker running this crew stopped {attempts} times; gave up."


def run_execute(*, org_id: Any, run_id: Any) -> str | None:
    """Claim and run it to its end; the final status (None when this delivery had nothing to do)."""
    claimed = run_claim(org_id=org_id, run_id=run_id)
    if claimed is None:
        return None
    run, lease = claimed
    heartbeat = _Heartbeat(run, lease)
    heartbeat.start()
    try:
        output = engine.Engine(run, lease).execute()
    except engine.LeaseLost:
        return None
    except engine.RunStopped as stop:
        return _finish_if_leased(run, lease, stop.status, code=stop.code, error=stop.message, output=stop.output)
    except SoftTimeLimitExceeded:
        return _finish_if_leased(run, lease, Run.Status.FAILED, code="time_limit", error="The run took too long "
                                 f"and was stopped after {settings.AGENTS_RUN_SOFT_TIME_LIMIT} s.")  # fmt: skip
    except (DatabaseError, RedisError):
        raise  # transient: the task retries (the lease is released first), or the watchdog takes it over
    except Exception as exc:
        logger.exception("crew run %s failed unexpectedly", run.pk)
        reason = f"The run failed unexpectedly ({type(exc).__name__}); we have been notified."
        _finish_if_leased(run, lease, Run.Status.FAILED, code="internal_error", error=reason)
        raise
    finally:
        heartbeat.stop()
    return _finish_if_leased(run, lease, Run.Status.SUCCEEDED, output=output)


class _Heartbeat(threading.Thread):
    """Renews a claimed run's heartbeat while its worker is alive, also through a long model call or tool (steps
    renew it too): only a dead worker's run goes stale and is taken over by the watchdog."""

    def __init__(self, run: Run, lease: uuid.UUID) -> None:
        super().__init__(name=f"run-heartbeat-{run.pk}", daemon=True)
        self.run_id, self.org_id, self.lease = run.pk, run.organization_id, lease
        self.interval = max(1.0, min(30.0, settings.AGENTS_RUN_STALLED_AFTER / 3))
        self._stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self._stopped.wait(self.interval):
                with suppress(DatabaseError):
                    Run.objects.for_org(self.org_id).filter(
                        pk=self.run_id, lease=self.lease, status=Run.Status.RUNNING
                    ).update(heartbeat_at=timezone.now())
        finally:
            connections.close_all()  # this thread's own connection

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)


def _finish_if_leased(run: Run, lease: uuid.UUID, status: str, **outcome: str) -> str | None:
    with transaction.atomic():
        current = Run.objects.for_org(run.organization_id).select_for_update().filter(pk=run.pk, lease=lease).first()
        if current is None:
            return None
        _run_finish(current, status, **outcome)
    with suppress(RedisError):
        get_redis().delete(engine.cancel_key(run.pk))
    return status


def run_release(*, org_id: Any, run_id: Any) -> None:
    """Give a claimed run back to the queue (before a retry of its task)."""
    Run.objects.for_org(org_id).filter(pk=run_id, status=Run.Status.RUNNING).update(
        status=Run.Status.QUEUED, lease=None, heartbeat_at=None
    )


def runs_recover_stalled() -> dict[str, int]:
    """The watchdog: runs whose worker stopped (no heartbeat) are queued again, or failed after too many
    attempts; queued runs that no worker picked up are queued again (claiming is idempotent)."""
    cutoff = timezone.now() - timedelta(seconds=settings.AGENTS_RUN_STALLED_AFTER)
    counts = {"requeued": 0, "failed": 0, "cancelled": 0}
    stalled = Run.all_orgs.filter(
        Q(status=Run.Status.RUNNING, heartbeat_at__lte=cutoff) | Q(status=Run.Status.QUEUED, updated_at__lte=cutoff)
    ).values_list("organization_id", "pk")[:500]
    for org_id, run_id in stalled:
        with transaction.atomic():
            runs = Run.objects.for_org(org_id).select_for_update(skip_locked=True, of=("self",))
            run = runs.select_related("organization").filter(pk=run_id).first()
            if run is None or run.status in Run.FINISHED:
                continue
            if run.cancel_requested_at is not None:
                _run_finish(run, Run.Status.CANCELLED, code="cancelled", error="Cancelled.")
                counts["cancelled"] += 1
            elif run.attempts >= settings.AGENTS_RUN_MAX_ATTEMPTS:
                _run_finish(run, Run.Status.FAILED, code="worker_lost", error=_gave_up(run.attempts))
                counts["failed"] += 1
            else:
                run.status, run.lease, run.heartbeat_at = Run.Status.QUEUED, None, None
                run.save(update_fields=["status", "lease", "heartbeat_at", "updated_at"])
                transaction.on_commit(partial(_enqueue_run, run))
                counts["requeued"] += 1
    return counts


def runs_start_scheduled(*, now: datetime | None = None) -> int:
    """Start the runs of crews whose schedule is due: one run per due slot (a missed slot while the scheduler
    was down gives one run, not a backlog), idempotent per crew and slot."""
    now = now or timezone.now()
    started = 0
    due = Crew.all_orgs.filter(
        schedule_enabled=True, next_run_at__lte=now, organization__deletion_requested_at__isnull=True
    )  # a team being erased runs nothing
    due = due.values_list("organization_id", "pk")
    for org_id, crew_id in due[:200]:
        with transaction.atomic():
            crews = Crew.objects.for_org(org_id).select_for_update(skip_locked=True, of=("self",))
            crew = crews.select_related("organization").filter(pk=crew_id, schedule_enabled=True,
                                                               next_run_at__lte=now).first()  # fmt: skip
            if crew is None:
                continue
            slot = crew.next_run_at
            assert slot is not None
            try:
                _, created = run_start(crew=crew, inputs=crew.schedule_inputs, trigger=Run.Trigger.SCHEDULE,
                                       idempotency_key=f"schedule:{crew.pk}:{slot.isoformat()}")  # fmt: skip
                started += created
            except ApplicationError as exc:
                logger.warning("scheduled run of crew %s not started: %s", crew.pk, exc.message)
                notify_members(org=crew.organization, title=f"Scheduled run of {crew.name} could not start: "
                               f"{exc.message}"[:200], url=f"/o/{crew.organization.slug}/crews/{crew.pk}/")  # fmt: skip
            crew.next_run_at = next_schedule_slot(crew.schedule_cron, now)
            crew.save(update_fields=["next_run_at", "updated_at"])
    return started
