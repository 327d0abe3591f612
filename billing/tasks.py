"""Billing tasks: thin."""

from celery import shared_task

from billing import services
from saas.core.tenancy import org_scope


@shared_task(name="billing.warn_usage", ignore_result=True, acks_late=True, max_retries=3)
def warn_usage(org_id: str, threshold: int) -> None:
    with org_scope(org_id):
        services.usage_warn(org_id=org_id, threshold=threshold)
