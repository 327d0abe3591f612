"""Accounts tasks: thin."""

from typing import Any

from celery import shared_task

from accounts import erasure, exports, services


@shared_task(name="accounts.purge_retention", ignore_result=True, acks_late=True, soft_time_limit=1700, time_limit=1800)
def purge_retention() -> dict[str, int]:
    """Every org's content past its retention, in batches (idempotent: a rerun finds nothing older left), and
    the files of expired exports."""
    purged = services.retention_purge()
    purged["exports"] = exports.exports_expire()
    return purged


@shared_task(name="accounts.build_export", ignore_result=True, acks_late=True, max_retries=2, soft_time_limit=1700,
             time_limit=1800)  # fmt: skip
def build_export(export_id: str) -> None:
    exports.export_build(export_id=export_id)


@shared_task(name="accounts.run_erasure", ignore_result=True, acks_late=True, soft_time_limit=3500, time_limit=3600)
def run_erasure(record_id: str) -> Any:
    """Idempotent and resumable: a redelivered or repeated task continues where the last one stopped."""
    record = erasure.erasure_run(record_id=record_id)
    return record.counts if record else None


@shared_task(name="accounts.resume_erasures", ignore_result=True)
def resume_erasures() -> list[str]:
    return erasure.erasures_resume()
