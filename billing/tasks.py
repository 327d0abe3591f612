"""Billing tasks: thin."""

from celery import shared_task

from billing import payments, services
from saas.core.tenancy import org_scope


@shared_task(name="billing.warn_usage", ignore_result=True, acks_late=True, max_retries=3)
def warn_usage(org_id: str, threshold: int) -> None:
    with org_scope(org_id):
        services.usage_warn(org_id=org_id, threshold=threshold)


@shared_task(name="billing.report_overage", ignore_result=True, acks_late=True, soft_time_limit=240, time_limit=300)
def report_overage() -> dict[str, int]:
    """Overage of subscribed orgs to Stripe's meter; idempotent (see billing.payments)."""
    return payments.overage_report()
