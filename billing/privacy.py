"""Billing's share of exports and erasure (saas/core/privacy.py): the org's plan and subscription, its usage
ledger, the quota counters in Redis and what dj-stripe keeps of its Stripe customer.

Deleting an org cancels its subscription in Stripe and deletes the Stripe customer (Stripe keeps the invoices,
as the law asks). Our copies of the invoices stay too, for their amounts, with the customer's name, email,
address and phone blanked; the webhook events about the customer, which carry the same, are deleted."""

from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q, Sum
from djstripe import models as djstripe_models

from billing import payments, quota
from billing.models import OrgBilling, UsageEvent, UsageReport
from saas.core.privacy import ExportSink, Store
from saas.core.redis import delete_matching

PERSONAL_CUSTOMER_FIELDS = ("email", "name", "description", "phone", "address", "shipping")
PERSONAL_INVOICE_FIELDS = ("customer_email", "customer_name", "customer_phone", "customer_address",
                           "customer_shipping")  # fmt: skip


def export_org(*, sink: ExportSink, org_id: Any, folder: str) -> None:
    billing = OrgBilling.objects.for_org(org_id).select_related("plan").first()
    usage = (
        UsageEvent.objects.for_org(org_id).values("period_start", "kind", "feature")
        .annotate(events=Count("id"), cost_usd=Sum("cost_usd")).order_by("period_start", "kind", "feature")
    )  # fmt: skip
    invoices = []
    if billing and billing.stripe_customer_id:
        for invoice in djstripe_models.Invoice.objects.filter(customer_id=billing.stripe_customer_id):
            data = invoice.stripe_data or {}
            invoices.append(
                {
                    key: data.get(key)
                    for key in (
                        "id",
                        "number",
                        "created",
                        "currency",
                        "total",
                        "amount_paid",
                        "status",
                        "period_start",
                        "period_end",
                    )
                }
            )
    sink.json(f"{folder}/billing.json", {
        "plan": billing.plan.slug if billing else None,
        "status": billing.status if billing else OrgBilling.Status.FREE,
        "spend_cap_usd": str(billing.spend_cap_usd) if billing and billing.spend_cap_usd is not None else None,
        "usage": [
            {"period_start": row["period_start"].isoformat(), "kind": row["kind"], "feature": row["feature"],
             "events": row["events"], "cost_usd": f"{row['cost_usd']:f}"}
            for row in usage
        ],
        "invoices": invoices,
    })  # fmt: skip


def _scrub_local_copies(customer_id: str) -> None:
    for customer in djstripe_models.Customer.objects.filter(id=customer_id):
        data = customer.stripe_data or {}
        data.update({key: None for key in PERSONAL_CUSTOMER_FIELDS}, metadata={})
        djstripe_models.Customer.objects.filter(pk=customer.pk).update(stripe_data=data, email="", metadata={})
    for invoice in djstripe_models.Invoice.objects.filter(customer_id=customer_id):
        data = invoice.stripe_data or {}
        data.update({key: None for key in PERSONAL_INVOICE_FIELDS})
        djstripe_models.Invoice.objects.filter(pk=invoice.pk).update(stripe_data=data)
    djstripe_models.Event.objects.filter(
        Q(stripe_data__data__object__customer=customer_id) | Q(stripe_data__data__object__id=customer_id)
    ).delete()


def erase_org(*, org_id: Any, batch_size: int) -> int:
    billing = OrgBilling.objects.for_org(org_id).first()
    if billing is not None:
        with transaction.atomic():
            if billing.stripe_customer_id:
                payments.customer_forget(billing)
                _scrub_local_copies(billing.stripe_customer_id)
            return billing.delete()[0]
    for model in (UsageEvent, UsageReport):
        batch = list(model.objects.for_org(org_id).values_list("pk", flat=True)[:batch_size])
        if batch:
            return int(model.objects.for_org(org_id).filter(pk__in=batch).delete()[0])
    return delete_matching(quota.key_prefix(org_id) + "*", limit=batch_size)


STORE = Store(
    name="billing",
    title="Billing",
    what="The team's plan, subscription state and spend cap; its usage ledger (requests and cost per period, no "
    "content); the Stripe customer and invoices as Stripe sent them; quota counters",
    where="PostgreSQL; Redis (counters of the current period); Stripe (card details never reach Crewdesk)",
    kept=lambda: (
        "For as long as the team exists; invoices as tax law requires (Stripe keeps them), without "
        f"personal data once the team is deleted. A payment overdue pauses AI requests after "
        f"{settings.BILLING_PAST_DUE_GRACE_DAYS} days"
    ),
    export_org=export_org,
    erase_org=erase_org,
)


def payments_notice() -> str:
    if not payments.stripe_configured():
        return "Payments are not switched on on this server: every team is on the Free plan."
    return (
        "Stripe processes payments: card details go to Stripe directly and never reach Crewdesk. Crewdesk sends "
        "Stripe the team's name, the owner's email address and the amount of AI requests over the plan."
    )
