"""Accounts tasks: thin."""

from celery import shared_task

from accounts import services


@shared_task(name="accounts.purge_retention", ignore_result=True, acks_late=True, soft_time_limit=1700, time_limit=1800)
def purge_retention() -> dict[str, int]:
    """Every org's content past its retention, in batches (idempotent: a rerun finds nothing older left)."""
    return services.retention_purge()
