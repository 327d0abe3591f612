"""Writes: an org's spend cap, and warnings when an org nears and reaches its allowance."""

from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db import transaction

from accounts.models import Membership, Organization
from accounts.services import audit_record, notify_members
from billing import quota, selectors
from billing.models import OrgBilling
from saas.core.errors import ApplicationError
from saas.core.redis import get_redis

THRESHOLDS = (80, 100)  # percent of the included AI requests


def usage_thresholds_crossed(*, included: int, before: int, after: int) -> list[int]:
    """The warning thresholds that a move from `before` to `after` requests crosses."""
    if included <= 0:
        return []
    return [t for t in THRESHOLDS if before * 100 < t * included <= after * 100]


@transaction.atomic
def usage_warn(*, org_id: Any, threshold: int) -> bool:
    """Tell the org's owners and admins (in the app and by email), once per period and threshold."""
    org = Organization.objects.filter(pk=org_id).first()
    if org is None:  # deleted since the request that queued this
        return False
    state = selectors.billing_state(org=org)
    once = f"{quota.key_prefix(org.pk)}{state.period_start:%Y%m%d%H%M}:warned:{threshold}"
    if not get_redis().set(once, 1, nx=True, ex=40 * 24 * 3600):
        return False
    plan = state.plan
    if threshold >= 100:
        title = (f"{org.name} has used all {plan.included_requests} AI requests of its {plan.name} plan"
                 + (": requests are refused until the next period or an upgrade." if plan.hard_cap
                    else "; further requests are billed as overage."))  # fmt: skip
    else:
        title = f"{org.name} has used {threshold}% of the {plan.included_requests} AI requests of its {plan.name} plan"
    url = f"/o/{org.slug}/billing/"
    notify_members(org=org, title=title, url=url, roles=[Membership.Role.OWNER, Membership.Role.ADMIN],
                   email=f"{title}.\n\nSee the usage: {settings.SITE_URL}{url}")  # fmt: skip
    return True


MAX_SPEND_CAP = Decimal(1_000_000)


def org_billing_locked(*, org: Organization) -> OrgBilling:
    """The org's billing row (made on the default plan when it has none), locked until the transaction ends."""
    rows = OrgBilling.objects.for_org(org)
    rows.get_or_create(organization=org, defaults={"plan": selectors.memo.current().default})
    return rows.select_for_update().get()


@transaction.atomic
def spend_cap_set(*, org: Organization, principal: Any, value: str) -> OrgBilling:
    """The most overage a period may cost (empty: no cap). Takes effect on the next AI request."""
    value = (value or "").strip().lstrip("$")
    cap: Decimal | None = None
    if value:
        try:
            cap = Decimal(value)
        except InvalidOperation:
            cap = Decimal(-1)
        if not cap.is_finite() or cap < 0 or cap > MAX_SPEND_CAP or cap != cap.quantize(Decimal("0.01")):
            raise ApplicationError("The spend cap is an amount in dollars, such as 25 or 25.50 (empty: no cap).",
                                   code="invalid_spend_cap", details={"spend_cap_usd": value})  # fmt: skip
    billing = org_billing_locked(org=org)
    before = billing.spend_cap_usd
    billing.spend_cap_usd = cap
    billing.save(update_fields=["spend_cap_usd", "updated_at"])
    change = {"before": None if before is None else str(before), "after": None if cap is None else str(cap)}
    audit_record(org=org, action="billing.spend_cap_set", principal=principal, target=org, metadata=change)
    return billing
