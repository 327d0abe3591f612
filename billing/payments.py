"""Stripe, through dj-stripe: Checkout to subscribe, the customer portal to manage and cancel, webhooks that
drive an org's plan and status, and overage reported to a Stripe billing meter.

Webhooks arrive at dj-stripe's endpoint, which verifies the signature, records each event once (a second
delivery of an event is a no-op) and re-reads the object from Stripe's API before storing it. The handlers
here then apply the subscription as Stripe has it *now*, not as the event described it: events that arrive
late or out of order cannot leave an org in a stale state.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe
from django.conf import settings
from django.core.signals import setting_changed
from django.db import transaction
from django.db.models import Count, Max
from django.dispatch import receiver
from django.utils import timezone
from djstripe import models as djstripe_models
from djstripe.signals import WEBHOOK_SIGNALS

from accounts.models import Organization
from accounts.services import audit_record
from billing import selectors, services
from billing.models import OrgBilling, Plan, UsageEvent, UsageReport
from saas.core.errors import ApplicationError, Conflict, ServiceUnavailable

logger = logging.getLogger(__name__)

# Stripe's subscription statuses, as an org's billing status. `incomplete` (the first payment has not gone
# through) does not change anything yet: the org keeps what it had until Stripe says active or expired.
STATUS_FROM_STRIPE = {
    "trialing": OrgBilling.Status.TRIALING,
    "active": OrgBilling.Status.ACTIVE,
    "past_due": OrgBilling.Status.PAST_DUE,
    "unpaid": OrgBilling.Status.PAST_DUE,
    "paused": OrgBilling.Status.PAST_DUE,
    "canceled": OrgBilling.Status.CANCELED,
    "incomplete_expired": OrgBilling.Status.CANCELED,
}
LIVE_STATUSES = {OrgBilling.Status.TRIALING, OrgBilling.Status.ACTIVE, OrgBilling.Status.PAST_DUE}
REPORT_LOOKBACK = timedelta(days=35)  # Stripe accepts meter events up to 35 days old


class StripeNotConfigured(ServiceUnavailable):
    code = "stripe_not_configured"


def stripe_configured() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


def use_api_base() -> None:
    """Stripe's address for every call, ours and dj-stripe's (the library keeps it at module level)."""
    stripe.api_base = settings.STRIPE_API_BASE or "https://api.stripe.com"


@receiver(setting_changed)
def _api_base_changed(setting: str, **kwargs: Any) -> None:
    if setting == "STRIPE_API_BASE":
        use_api_base()


def subscribed(state: selectors.BillingState) -> bool:
    """Has a live Stripe subscription (so plan changes and cancelling go through the portal)."""
    return state.status in LIVE_STATUSES and bool(state.billing and state.billing.stripe_subscription_id)


def _api() -> dict[str, Any]:
    """The keyword arguments of every Stripe call."""
    if not stripe_configured():
        raise StripeNotConfigured("Stripe is not configured on this server (STRIPE_SECRET_KEY is empty).")
    return {"api_key": settings.STRIPE_SECRET_KEY}


def _stripe_error(error: stripe.StripeError) -> ApplicationError:
    logger.warning("Stripe refused a request: %s", error)
    return ServiceUnavailable(f"Stripe could not be reached or refused the request: {error.user_message or error}",
                              code="stripe_error")  # fmt: skip


# --- Checkout and portal -----------------------------------------------------------------------------------


def _customer_id(org: Organization, billing: OrgBilling, email: str) -> str:
    if billing.stripe_customer_id:
        return billing.stripe_customer_id
    customer = stripe.Customer.create(
        name=org.name, email=email, metadata={"org_id": str(org.pk), "org_slug": org.slug},
        idempotency_key=f"crewdesk-customer-{org.pk}", **_api(),
    )  # fmt: skip
    billing.stripe_customer_id = customer.id
    billing.save(update_fields=["stripe_customer_id", "updated_at"])
    return customer.id


@transaction.atomic
def checkout_start(*, org: Organization, plan_slug: str, user: Any, return_url: str) -> str:
    """The Stripe Checkout page that subscribes the org to a paid plan (its URL)."""
    _api()
    plan = Plan.objects.filter(slug=plan_slug).first()
    if plan is None or plan.monthly_price_usd <= 0:
        raise ApplicationError("Choose a paid plan.", code="invalid_plan", details={"plan": plan_slug})
    if not plan.stripe_price_id:
        raise ApplicationError(f"The {plan.name} plan is not linked to a Stripe price yet (run stripe_setup).",
                               code="plan_not_linked", details={"plan": plan_slug})  # fmt: skip
    billing = services.org_billing_locked(org=org)
    if billing.status in LIVE_STATUSES and billing.stripe_subscription_id:  # the row, locked: not the memo
        raise Conflict("This org already has a subscription: change or cancel it in the billing portal.",
                       code="already_subscribed")  # fmt: skip
    line_items: list[Any] = [{"price": plan.stripe_price_id, "quantity": 1}]
    if plan.stripe_metered_price_id:
        line_items.append({"price": plan.stripe_metered_price_id})
    audit_record(org=org, action="billing.checkout_started", user=user, target=org, metadata={"plan": plan.slug})
    try:
        customer = _customer_id(org, billing, user.email)
        session = stripe.checkout.Session.create(
            mode="subscription", customer=customer, line_items=line_items, client_reference_id=str(org.pk),
            metadata={"org_id": str(org.pk), "plan": plan.slug},
            subscription_data={"metadata": {"org_id": str(org.pk)}},
            success_url=f"{return_url}?checkout=done", cancel_url=f"{return_url}?checkout=cancelled", **_api(),
        )  # fmt: skip
    except stripe.StripeError as error:
        raise _stripe_error(error) from error
    return str(session.url)


def portal_start(*, org: Organization, return_url: str) -> str:
    """Stripe's customer portal for the org (change card, see invoices, cancel): its URL."""
    billing = OrgBilling.objects.for_org(org).first()
    if billing is None or not billing.stripe_customer_id:
        raise Conflict("This org has no Stripe customer yet: subscribe to a plan first.", code="no_customer")
    try:
        session = stripe.billing_portal.Session.create(customer=billing.stripe_customer_id, return_url=return_url,
                                                       **_api())  # fmt: skip
    except stripe.StripeError as error:
        raise _stripe_error(error) from error
    return str(session.url)


# --- Webhooks: Stripe's state to the org -------------------------------------------------------------------


def customer_forget(billing: OrgBilling) -> None:
    """Cancel the subscription and delete the customer in Stripe; both are no-ops the second time."""
    if not stripe_configured():
        return
    try:
        if billing.stripe_subscription_id:
            subscription = stripe.Subscription.retrieve(billing.stripe_subscription_id, **_api())
            if subscription["status"] not in ("canceled", "incomplete_expired"):
                stripe.Subscription.cancel(billing.stripe_subscription_id, **_api())
        stripe.Customer.delete(billing.stripe_customer_id, **_api())
    except stripe.InvalidRequestError as error:
        if getattr(error, "code", "") != "resource_missing":
            raise _stripe_error(error) from error
    except stripe.StripeError as error:
        raise _stripe_error(error) from error


def customers_by_email(email: str) -> list[str]:
    """The ids of Stripe's customers with this email address (Stripe compares it exactly)."""
    if not stripe_configured() or not email:
        return []
    try:
        found = stripe.Customer.list(email=email, limit=100, **_api())
    except stripe.StripeError as error:
        raise _stripe_error(error) from error
    return [customer["id"] for customer in found.auto_paging_iter()]


def customer_contact_replace(*, customer_id: str, texts: tuple[str, ...], email: str, name: str) -> bool:
    """Where Stripe's customer carries a person's email or name (`texts`), put the team's billing contact
    (`email`, `name`; empty removes them) in its place. True if Stripe's copy was changed."""
    if not stripe_configured():
        return False
    lowered = {text.lower() for text in texts}
    try:
        customer = stripe.Customer.retrieve(customer_id, **_api())
        if getattr(customer, "deleted", False):
            return False
        change: dict[str, Any] = {}
        if (getattr(customer, "email", None) or "").lower() in lowered:
            change["email"] = email
        if (getattr(customer, "name", None) or "").lower() in lowered:
            change["name"] = name
        if change:
            stripe.Customer.modify(customer_id, **change, **_api())
        return bool(change)
    except stripe.InvalidRequestError as error:
        if getattr(error, "code", "") == "resource_missing":
            return False
        raise _stripe_error(error) from error
    except stripe.StripeError as error:
        raise _stripe_error(error) from error


def _timestamp(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), tz=UTC) if value else None


def _items(data: dict[str, Any]) -> list[dict[str, Any]]:
    items = data.get("items") or {}
    return list(items.get("data") or []) if isinstance(items, dict) else []


def _price_ids(data: dict[str, Any]) -> set[str]:
    ids = set()
    for item in _items(data):
        for key in ("price", "plan"):
            value = item.get(key)
            ids.add(value.get("id") if isinstance(value, dict) else value)
    return {price for price in ids if price}


def _period(data: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    # Newer API versions carry the period on the items, older ones on the subscription.
    start, end = data.get("current_period_start"), data.get("current_period_end")
    if not start and _items(data):
        start, end = _items(data)[0].get("current_period_start"), _items(data)[0].get("current_period_end")
    return _timestamp(start), _timestamp(end)


def _org_for_customer(customer_id: str, data: dict[str, Any]) -> Organization | None:
    billing = OrgBilling.all_orgs.filter(stripe_customer_id=customer_id).select_related("organization").first()
    if billing is not None:
        return billing.organization
    org_id = (data.get("metadata") or {}).get("org_id")
    return Organization.objects.filter(pk=org_id).first() if org_id else None


@transaction.atomic
def subscription_apply(*, data: dict[str, Any], now: datetime | None = None) -> OrgBilling | None:
    """Make the org's plan and status what this Stripe subscription (as read from Stripe) says."""
    now = now or timezone.now()
    customer = data.get("customer")
    customer_id = customer.get("id") if isinstance(customer, dict) else customer
    org = _org_for_customer(str(customer_id or ""), data)
    status = STATUS_FROM_STRIPE.get(str(data.get("status")))
    if org is None:
        logger.warning("A Stripe subscription %s of customer %s belongs to no org", data.get("id"), customer_id)
        return None
    billing = services.org_billing_locked(org=org)
    if status is None:  # incomplete: nothing has been paid yet
        return billing
    # Another subscription's news: a live one replaces the current one; an ended one changes nothing (an old
    # subscription's late "canceled" must not end the one that replaced it).
    replaced = billing.stripe_subscription_id and data["id"] != billing.stripe_subscription_id
    if replaced and status not in LIVE_STATUSES:
        return billing
    plan = Plan.objects.filter(stripe_price_id__in=_price_ids(data)).first()
    if plan is None and status in LIVE_STATUSES:
        logger.error("Stripe subscription %s has no price linked to a plan: %s", data["id"], _price_ids(data))
        return billing
    before = (billing.plan_id, billing.status)
    billing.stripe_subscription_id = data["id"]
    billing.stripe_customer_id = str(customer_id)
    billing.status = status
    if plan is not None:
        billing.plan = plan
    if status == OrgBilling.Status.CANCELED:
        billing.plan = selectors.memo.current().default
    billing.current_period_start, billing.current_period_end = _period(data)
    if status == OrgBilling.Status.PAST_DUE:
        billing.past_due_since = billing.past_due_since or now
    else:
        billing.past_due_since = None
    billing.save(update_fields=[
        "stripe_subscription_id", "stripe_customer_id", "status", "plan", "current_period_start",
        "current_period_end", "past_due_since", "updated_at",
    ])  # fmt: skip
    if (billing.plan_id, billing.status) != before:
        audit_record(org=org, action="billing.subscription_changed", target=org, metadata={
            "plan": billing.plan.slug, "status": billing.status, "subscription": data["id"]})  # fmt: skip
    return billing


def _subscription_data(subscription_id: str) -> dict[str, Any]:
    """The subscription as Stripe has it now, stored by dj-stripe. Read again even when dj-stripe has just
    stored it for a subscription event: for an invoice or checkout event its copy may be older."""
    data = stripe.Subscription.retrieve(subscription_id, **_api())
    return dict(
        djstripe_models.Subscription.sync_from_stripe_data(data, api_key=settings.STRIPE_SECRET_KEY).stripe_data
    )


@receiver(WEBHOOK_SIGNALS["customer.subscription.created"])
@receiver(WEBHOOK_SIGNALS["customer.subscription.updated"])
@receiver(WEBHOOK_SIGNALS["customer.subscription.deleted"])
@receiver(WEBHOOK_SIGNALS["customer.subscription.paused"])
@receiver(WEBHOOK_SIGNALS["customer.subscription.resumed"])
def on_subscription_event(sender: Any, event: Any, **kwargs: Any) -> None:
    subscription_apply(data=_subscription_data(event.data["object"]["id"]))


@receiver(WEBHOOK_SIGNALS["checkout.session.completed"])
@receiver(WEBHOOK_SIGNALS["invoice.payment_failed"])
@receiver(WEBHOOK_SIGNALS["invoice.paid"])
def on_payment_event(sender: Any, event: Any, **kwargs: Any) -> None:
    """A checkout or an invoice that names a subscription: apply that subscription as it stands."""
    subscription = event.data["object"].get("subscription")
    if isinstance(subscription, dict):
        subscription = subscription.get("id")
    if subscription:
        subscription_apply(data=_subscription_data(subscription))


# --- Metered overage ---------------------------------------------------------------------------------------


def _report_period(org_billing: OrgBilling, period_start: datetime) -> int:
    """Bring Stripe's meter up to this period's overage: at most one report in flight, resent under its own
    identifier until Stripe has it. Returns the requests newly reported."""
    report = _report_prepare(org_billing, period_start)
    if report is None:
        return 0
    # The report is committed before the call: if the process dies now, the next run resends exactly this one.
    try:
        stripe.billing.MeterEvent.create(
            event_name=settings.STRIPE_METER_EVENT_NAME, identifier=report.pending_identifier,
            payload={"stripe_customer_id": org_billing.stripe_customer_id, "value": str(report.pending_requests)},
            timestamp=int((report.pending_at or timezone.now()).timestamp()),  # inside the period it counts for
            idempotency_key=report.pending_identifier, **_api(),
        )  # fmt: skip
    except stripe.StripeError:
        logger.exception(
            "Could not report the overage of org %s; the next run sends it again", org_billing.organization_id
        )
        return 0
    return _report_mark_sent(report)


@transaction.atomic
def _report_prepare(org_billing: OrgBilling, period_start: datetime) -> UsageReport | None:
    """The report in flight for this period, or a new one for the overage not yet reported (None: nothing)."""
    org = org_billing.organization
    reports = UsageReport.objects.for_org(org)
    reports.get_or_create(organization=org, period_start=period_start)
    report = reports.select_for_update().get(period_start=period_start)
    if report.pending_identifier:
        return report
    requests = UsageEvent.objects.for_org(org).filter(period_start=period_start, kind=UsageEvent.Kind.REQUEST)
    totals = requests.aggregate(used=Count("id"), last=Max("created_at"))
    overage = 0 if org_billing.plan.hard_cap else max(0, totals["used"] - org_billing.plan.included_requests)
    if overage <= report.reported_requests:
        return None
    report.pending_requests = overage - report.reported_requests
    report.pending_identifier = f"crewdesk-{org.pk}-{period_start:%Y%m%d%H%M%S}-{report.reported_requests}-{overage}"
    report.pending_at = totals["last"]
    report.save(update_fields=["pending_requests", "pending_identifier", "pending_at", "updated_at"])
    return report


@transaction.atomic
def _report_mark_sent(sent: UsageReport) -> int:
    report = UsageReport.objects.for_org(sent.organization_id).select_for_update().get(pk=sent.pk)
    if report.pending_identifier != sent.pending_identifier:  # a concurrent run marked it already
        return 0
    report.reported_requests += report.pending_requests
    report.pending_requests, report.pending_identifier = 0, ""
    report.last_reported_at = timezone.now()
    report.save(update_fields=["reported_requests", "pending_requests", "pending_identifier", "last_reported_at",
                               "updated_at"])  # fmt: skip
    return sent.pending_requests


def overage_report(*, now: datetime | None = None) -> dict[str, int]:
    """The beat task's work: every subscribed org's overage, per period still open to meter events."""
    if not stripe_configured():
        return {"orgs": 0, "requests": 0}
    now = now or timezone.now()
    subscribed = OrgBilling.all_orgs.filter(status__in=LIVE_STATUSES, plan__hard_cap=False).exclude(
        stripe_customer_id="").select_related("organization", "plan")  # fmt: skip
    orgs = requests = 0
    for org_billing in subscribed.iterator():
        periods = (UsageEvent.all_orgs.filter(organization_id=org_billing.organization_id,
                                              period_start__gte=now - REPORT_LOOKBACK)
                   .values("period_start").annotate(n=Count("id")).values_list("period_start", flat=True))  # fmt: skip
        sent = sum(_report_period(org_billing, period) for period in periods)
        orgs += 1 if sent else 0
        requests += sent
    return {"orgs": orgs, "requests": requests}
