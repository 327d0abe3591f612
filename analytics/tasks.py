"""Analytics' Celery tasks: thin, by id, org first."""

import logging
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from analytics import eval_runs, rollups
from analytics.models import EvalRun
from saas.core.tenancy import org_scope

logger = logging.getLogger(__name__)


@shared_task(
    name="analytics.eval_run",
    acks_late=True,  # a lost worker's run is delivered again and goes on from its first unscored case
    reject_on_worker_lost=True,
    soft_time_limit=1800,  # a dataset holds at most 500 cases (analytics.evals.MAX_CASES)
    time_limit=1860,
)
def eval_run(org_id: str, run_id: str) -> str | None:
    with org_scope(org_id):
        try:
            run = eval_runs.eval_run_execute(org_id=org_id, run_id=run_id)
        except SoftTimeLimitExceeded:
            run = EvalRun.objects.for_org(org_id).filter(pk=run_id).first()
            if run is not None:
                eval_runs.eval_run_fail(run=run, reason="The run took too long and was stopped.")
            return None
        except Exception:
            run = EvalRun.objects.for_org(org_id).filter(pk=run_id).first()
            if run is not None:
                eval_runs.eval_run_fail(run=run, reason="An unexpected error stopped the run.")
            raise
        return run.status if run else None


@shared_task(name="analytics.rollup_hours", ignore_result=True, acks_late=True, soft_time_limit=840, time_limit=900)
def rollup_hours(org_ids: list[str] | None = None, hours: int = rollups.RECOMPUTE_HOURS) -> dict[str, Any]:
    """Idempotent: recomputes the last `hours` closed hours and the open one (of `org_ids`, or of every org with
    recent activity) and replaces their rollups; a rerun writes the same rows."""
    done = rollups.rollup_hours(org_ids=org_ids, hours=hours)
    return {"orgs": len(done), "rows": sum(item.rows for item in done)}
