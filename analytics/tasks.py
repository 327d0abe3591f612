from typing import Any

from celery import shared_task

from analytics import rollups


@shared_task(name="analytics.rollup_hours", ignore_result=True, acks_late=True, soft_time_limit=840, time_limit=900)
def rollup_hours(org_ids: list[str] | None = None, hours: int = rollups.RECOMPUTE_HOURS) -> dict[str, Any]:
    """Idempotent: recomputes the last `hours` closed hours and the open one (of `org_ids`, or of every org with
    recent activity) and replaces their rollups; a rerun writes the same rows."""
    done = rollups.rollup_hours(org_ids=org_ids, hours=hours)
    return {"orgs": len(done), "rows": sum(item.rows for item in done)}
