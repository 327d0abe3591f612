"""The gateway's background work."""

from celery import shared_task

from saas.llm import ledger


@shared_task(name="llm.drain_ledger", ignore_result=True, soft_time_limit=50, time_limit=60)
def drain_ledger() -> int:
    """Scheduled by beat (LLM_LEDGER_DRAIN_SECONDS): write the ledger rows waiting in the Redis stream. Safe to
    run twice at once and to re-run after a crash (each batch is acknowledged only once it is committed, and
    inserts ignore rows already there)."""
    return ledger.drain()
