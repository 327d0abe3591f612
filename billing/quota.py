"""AI-request quotas that hold under concurrency: reserve before the call, settle after it.

Per org and billing period, Redis holds `used` (settled billable requests, seeded from the usage ledger in
PostgreSQL when missing) and `held` (a sorted set of reservations in flight, each expiring on its own). One
Lua script checks `used + held` against the limit and adds the reservation atomically, so 50 parallel
requests at the edge of an allowance get exactly the requests that are left. Settling removes the
reservation and, for a billable call, writes the usage row first and then counts it; a process that dies
between the two leaves a reservation that expires and a row that the next seeding counts.

The gateway calls `reserve` once the request is valid, and `settle` when its ledger row is written: a call
answered by a model is a billable request, a cache hit is recorded as one and does not use the allowance, a
failure releases the reservation.
"""

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cache, partial
from typing import Any

from django.db import transaction

from billing import selectors
from billing.models import UsageEvent
from billing.services import usage_thresholds_crossed
from billing.tasks import warn_usage
from saas.core.redis import get_redis

logger = logging.getLogger(__name__)
RESERVATION_SECONDS = 15 * 60  # longer than any call with its retries and fallbacks
PERIOD_KEY_SECONDS = 40 * 24 * 3600

_RESERVE = """
local used = redis.call('GET', KEYS[1])
if not used then return {-1, 0} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
local taken = tonumber(used) + redis.call('ZCARD', KEYS[2])
local limit = tonumber(ARGV[1])
if limit >= 0 and taken >= limit then return {0, taken} end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return {1, taken + 1}
"""
_SETTLE = """
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCR', KEYS[1]) end
return -1
"""


@cache
def _script(name: str) -> Any:
    """The script, sent once and then run by its digest (EVALSHA)."""
    return get_redis().register_script({"reserve": _RESERVE, "settle": _SETTLE}[name])


class QuotaExceeded(Exception):
    def __init__(self, *, plan: Any, used: int, limit: int, org: Any) -> None:
        self.plan, self.used, self.limit = plan, used, limit
        if plan.hard_cap:
            message = (f"This org has used the {limit} AI requests of its {plan.name} plan for this period. "
                       "Upgrade the plan to continue.")  # fmt: skip
        else:
            message = f"This org has reached its monthly spend cap ({limit} AI requests this period)."
        super().__init__(message)
        self.message = message
        self.details = {"limit": "ai_requests", "plan": plan.slug, "used": used, "allowed": limit,
                        "upgrade_url": f"/o/{org.slug}/billing/"}  # fmt: skip


class PaymentOverdue(Exception):
    def __init__(self, *, org: Any, since: datetime) -> None:
        self.message = (f"This org's payment has been overdue since {since:%Y-%m-%d}: AI requests are paused until "
                        "the invoice is paid. An owner can update the card in the billing portal.")  # fmt: skip
        super().__init__(self.message)
        self.details = {"limit": "payment_overdue", "past_due_since": since.isoformat(),
                        "billing_url": f"/o/{org.slug}/billing/"}  # fmt: skip


@dataclass(frozen=True)
class Reservation:
    org: Any
    period_start: datetime
    token: str
    included: int  # the plan's allowance, for the 80% and 100% warnings

    @property
    def keys(self) -> list[str]:
        return _keys(self.org.pk, self.period_start)


def key_prefix(org_id: Any) -> str:
    """Every quota key of an org starts so (erasure deletes them by it)."""
    return f"crewdesk:quota:{org_id}:"


def _keys(org_id: Any, period_start: datetime) -> list[str]:
    stamp = period_start.strftime("%Y%m%d%H%M")
    return [f"{key_prefix(org_id)}{stamp}:used", f"{key_prefix(org_id)}{stamp}:held"]


def reserve(*, org: Any) -> Reservation:
    """A place for one AI request in this period, or QuotaExceeded naming the limit."""
    state = selectors.billing_state(org=org)
    if state.restricted and state.billing and state.billing.past_due_since:
        raise PaymentOverdue(org=org, since=state.billing.past_due_since)
    period_start = state.period_start
    limit = state.request_limit
    reservation = Reservation(org, period_start, uuid.uuid4().hex, state.plan.included_requests)
    redis = get_redis()
    now = time.time()
    for _ in range(2):
        allowed, taken = _script("reserve")(keys=reservation.keys, args=[
            limit, now, now + RESERVATION_SECONDS, reservation.token, RESERVATION_SECONDS])  # fmt: skip
        if allowed == -1:  # not in Redis (a new period, a restarted Redis): count the ledger
            used = UsageEvent.objects.for_org(org).filter(period_start=period_start, kind="request").count()
            redis.set(reservation.keys[0], used, nx=True, ex=PERIOD_KEY_SECONDS)
            continue
        if allowed == 0:
            raise QuotaExceeded(plan=state.plan, used=int(taken), limit=limit, org=org)
        return reservation
    raise RuntimeError("the quota counter could not be seeded")  # pragma: no cover (SET NX then GET)


def settle(reservation: Reservation, *, call: Any, billable: bool, cache_hit: bool) -> None:
    """After the call's ledger row: the usage row (for a billable request or a cache hit), then Redis."""
    if billable or cache_hit:
        UsageEvent.objects.for_org(reservation.org).create(
            organization=reservation.org, llm_call=call, kind="request" if billable else "cache_hit",
            feature=call.feature, model=call.model_used, cost_usd=call.cost_usd, period_start=reservation.period_start,
        )  # fmt: skip
    try:
        used = int(_script("settle")(keys=reservation.keys, args=[reservation.token, "1" if billable else "0"]))
    except Exception:  # the reservation expires on its own; the row is counted at the next seeding
        logger.warning("Could not settle a quota reservation of org %s", reservation.org.pk)
        return
    for threshold in usage_thresholds_crossed(included=reservation.included, before=used - 1, after=used):
        transaction.on_commit(partial(_warn_later, str(reservation.org.pk), threshold))


def _warn_later(org_id: str, threshold: int) -> None:
    try:
        warn_usage.delay(org_id, threshold)
    except Exception:  # a broker outage must not fail the answer; the next threshold warns again
        logger.warning("Could not queue the %s%% usage warning of org %s", threshold, org_id)
