"""Billing's share of exports and erasure (saas/core/privacy.py): the org's plan and subscription, its usage
ledger, the quota counters in Redis and what dj-stripe keeps of its Stripe customer.

Deleting an org cancels its subscription in Stripe and deletes the Stripe customer (Stripe keeps the invoices,
as the law asks). Our copies of the invoices stay too, for their amounts, with the customer's name, email,
address and phone blanked; the webhook events about the customer, which carry the same, are deleted."""

from functools import reduce
from operator import or_
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import models, transaction
from django.db.models import Count, Q, Sum
from djstripe import models as djstripe_models

from accounts.models import Membership
from billing import payments, quota
from billing.models import OrgBilling, UsageEvent, UsageReport
from saas.core.privacy import ExportSink, Store, Subject
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


# --- A person's email and name in Stripe and in dj-stripe's copies ------------------------------------------
#
# A person who handed their team over and then deleted their account may still be the contact of the team's
# Stripe customer (Checkout made it with the owner's email), and their email and name are in dj-stripe's copies
# of the customer, its invoices, charges, sessions, events and webhook bodies. Stripe's customer gets the team's
# current owner as its contact (or none), and every dj-stripe table is scrubbed of the person's texts.

NOT_PERSONAL = {djstripe_models.APIKey, djstripe_models.WebhookEndpoint, djstripe_models.IdempotencyKey}
NOT_PERSONAL_FIELDS = {"id", "secret", "api_version", "currency", "status", "type", "djstripe_version"}


def _contact_for(customer_id: str, subject: Subject) -> tuple[str, str]:
    """The email and name a team's customer should carry now: its current owner's address and the team's
    name; empty when no team holds the customer (Stripe then keeps no contact)."""
    billing = OrgBilling.all_orgs.filter(stripe_customer_id=customer_id).select_related("organization").first()
    if billing is None:
        return "", ""
    owner = (
        Membership.all_orgs.filter(organization_id=billing.organization_id, role=Membership.Role.OWNER)
        .exclude(user_id=subject.user_id).select_related("user").order_by("created_at").first()
    )  # fmt: skip
    return (owner.user.email if owner else ""), billing.organization.name


def _stripe_customers_of(subject: Subject) -> set[str]:
    email = subject.texts[0] if subject.texts else ""
    local = djstripe_models.Customer.objects.filter(
        reduce(
            or_, [Q(email__iexact=text) | Q(stripe_data__icontains=text) for text in _identifying(subject)], Q(pk=None)
        )
    ).values_list("id", flat=True)
    org = OrgBilling.all_orgs.filter(organization_id=subject.org_id).exclude(stripe_customer_id="")
    return {*payments.customers_by_email(email), *local, *org.values_list("stripe_customer_id", flat=True)}


def _scrubbed(value: Any, subject: Subject, lowered: tuple[str, ...]) -> Any:
    """`value` (JSON or text) with the person's email removed and their name replaced by the pseudonym."""
    if isinstance(value, dict):
        return {key: _scrubbed(item, subject, lowered) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrubbed(item, subject, lowered) for item in value]
    if isinstance(value, str) and any(text in value.lower() for text in lowered):
        if value.strip().lower() in lowered[:1]:
            return None  # the email address itself
        for text in sorted(subject.texts, key=len, reverse=True):
            value = _replace_folded(value, text, subject.pseudonym)
        return value
    return value


def _replace_folded(value: str, text: str, by: str) -> str:
    lowered, needle, start, out = value.lower(), text.lower(), 0, []
    while (found := lowered.find(needle, start)) >= 0:
        out += [value[start:found], by]
        start = found + len(needle)
    return "".join([*out, value[start:]])


def _text_fields(model: type[models.Model]) -> list[models.Field]:
    return [field for field in model._meta.concrete_fields
            if isinstance(field, models.CharField | models.TextField | models.JSONField)
            and not field.primary_key and field.name not in NOT_PERSONAL_FIELDS]  # fmt: skip


def _identifying(subject: Subject) -> tuple[str, ...]:
    """The email and the full name: a first or last name alone (a subject text too) would match words in
    Stripe's data that are not the person ("Ada" in "metadata", "Canada")."""
    return tuple(text for text in subject.texts if "@" in text or " " in text.strip())


def _scrub_djstripe(subject: Subject, batch_size: int) -> int:
    """One batch of dj-stripe rows that hold the person's email or full name, scrubbed in place. Only rows that
    change are counted, so the job that calls this until 0 always ends."""
    texts = _identifying(subject)
    lowered = tuple(text.lower() for text in texts)
    scrub = Subject(subject.user_id, subject.org_id, subject.pseudonym, texts, subject.transfer_content)
    changed = 0
    for model in apps.get_app_config("djstripe").get_models():
        fields = _text_fields(model) if model not in NOT_PERSONAL else []
        if not fields or not texts:
            continue
        matching = reduce(or_, [Q(**{f"{field.name}__icontains": text}) for field in fields for text in texts])
        for row in model._default_manager.filter(matching).iterator():
            changes = {field.name: _scrubbed(getattr(row, field.name), scrub, lowered) for field in fields}
            if model is djstripe_models.Customer:  # the team's contact, as Stripe now has it
                email, name = _contact_for(getattr(row, "id", ""), subject)
                data, before = changes["stripe_data"] or {}, (row.stripe_data or {}).get("name") or ""  # type: ignore[attr-defined]
                data["email"] = email or None
                if before.lower() in lowered:
                    data["name"] = name or None
                changes.update(stripe_data=data, email=email)
            for field in fields:  # a text column holds no None: what was the email becomes empty
                if changes[field.name] is None and not field.null:
                    changes[field.name] = "" if not isinstance(field, models.JSONField) else {}
            changes = {name: value for name, value in changes.items() if value != getattr(row, name)}
            if changes:
                model._default_manager.filter(pk=row.pk).update(**changes)
                changed += 1
                if changed >= batch_size:
                    return changed
    return changed


def erase_user(*, subject: Subject, batch_size: int) -> int:
    """First Stripe's customers that carry the person as their contact, then dj-stripe's copies. Idempotent:
    what was changed no longer matches."""
    changed = 0
    for customer_id in sorted(_stripe_customers_of(subject))[:batch_size]:
        email, name = _contact_for(customer_id, subject)
        changed += payments.customer_contact_replace(customer_id=customer_id, texts=_identifying(subject), email=email,
                                                     name=name)  # fmt: skip
    if changed:
        return changed
    with transaction.atomic():
        return _scrub_djstripe(subject, batch_size)


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
    erase_user=erase_user,
    erase_org=erase_org,
)


def payments_notice() -> str:
    if not payments.stripe_configured():
        return "Payments are not switched on on this server: every team is on the Free plan."
    return (
        "Stripe processes payments: card details go to Stripe directly and never reach Crewdesk. Crewdesk sends "
        "Stripe the team's name, the owner's email address and the amount of AI requests over the plan."
    )
