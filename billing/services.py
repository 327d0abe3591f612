"""Writes: warnings when an org nears and reaches its allowance."""

from typing import Any

from django.conf import settings
from django.db import transaction

from accounts.models import Membership, Organization
from accounts.services import notify_members
from billing import selectors
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
    org = Organization.objects.get(pk=org_id)
    state = selectors.billing_state(org=org)
    once = f"crewdesk:quota:{org.pk}:{state.period_start:%Y%m%d%H%M}:warned:{threshold}"
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
