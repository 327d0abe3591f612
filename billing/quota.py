"""AI-request quotas that hold under concurrency: reserve before the call, settle after it.

Per org and billing period, Redis holds `used` (settled billable requests, seeded from the usage ledger in
PostgreSQL when missing) and `held` (a sorted set of reservations in flight, each expiring on its own). One
Lua script checks `used + held` against the limit and adds the reservation atomically, so 50 parallel
requests at the edge of an allowance get exactly the requests that are left. Settling removes the
reservation and, for a billable call, writes the usage row first and then counts it; a process that dies
between the two leaves a reservation that expires and a row that the next seeding counts.

The gateway calls `reserve` once the request is valid and missed the caches (a cached answer needs no place),
or takes the place its request took ahead in the rate-limit round trip (below), and `release` when the call
ends: a call answered by a model counts as a billable request, anything else only gives its place back. The
usage row itself is written with the call's ledger row, in the same transaction (saas/llm/ledger.py), so a call
is charged exactly when its row exists.

When Redis is down, `reserve` falls back to PostgreSQL: the settled usage rows of the period are counted
under a per-org advisory lock. Requests in flight are not counted then, so during an outage an org at the
edge of its allowance can go past it by the requests it has in flight at that moment.
"""

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from functools import cache, partial
from typing import Any

import redis as redis_lib
from django.db import connection, transaction

from billing import selectors
from billing.models import UsageEvent
from billing.services import usage_thresholds_crossed
from billing.tasks import warn_usage
from saas.core import on_loop
from saas.core.redis import get_redis

redis_errors = (redis_lib.RedisError, OSError)

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


def settle_lua(*, used: str, held: str, place: str, billable: str) -> str:
    """Settling a reservation, in Lua: its place given back and, for a billable call, counted as used (when the
    counter exists); evaluates to the new count, or -1. The arguments name where the script finds each value
    (KEYS[i] or ARGV[i]), so that another script can settle as part of its own work (saas/llm/ledger.py)."""
    return (f"redis.call('ZREM', {held}, {place})\n"
            f"if {billable} == '1' and redis.call('EXISTS', {used}) == 1 then return redis.call('INCR', {used}) end\n"
            "return -1\n")  # fmt: skip


_SETTLE = settle_lua(used="KEYS[1]", held="KEYS[2]", place="ARGV[1]", billable="ARGV[2]")


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
    in_redis: bool = True  # False: taken from PostgreSQL while Redis was down (nothing to give back there)

    @property
    def keys(self) -> list[str]:
        return _keys(self.org.pk, self.period_start)


def key_prefix(org_id: Any) -> str:
    """Every quota key of an org starts so (erasure deletes them by it)."""
    return f"crewdesk:quota:{org_id}:"


def _keys(org_id: Any, period_start: datetime) -> list[str]:
    stamp = period_start.strftime("%Y%m%d%H%M")
    return [f"{key_prefix(org_id)}{stamp}:used", f"{key_prefix(org_id)}{stamp}:held"]


def standing(*, org: Any) -> selectors.BillingState:
    """The org's billing state, or PaymentOverdue when its AI requests are paused (even cached answers)."""
    state = selectors.billing_state(org=org)
    if state.restricted and state.billing and state.billing.past_due_since:
        raise PaymentOverdue(org=org, since=state.billing.past_due_since)
    return state


# --- A place taken ahead, in the request's rate-limit round trip -------------------------------------------
#
# An endpoint whose requests mostly become model calls (POST /v1/chat/completions) takes its quota place in the
# script that counts its rate limits (saas.core.ratelimit.Companion): one round trip less per call. The place
# waits for the call in `_places`; `reserve` takes it instead of asking Redis again, when the call misses the
# caches. A request that ends without using it (a cached answer, an invalid body, a refusal) gives it back as
# it ends (`places_taken_ahead`). Refused ahead (the org at its limit) is not an answer yet: a cached answer
# needs no place, and on a miss `reserve` asks again, as it does without a place taken ahead.


@dataclass
class _Ahead:
    reservation: Reservation
    outcome: list[Any] | None = None  # the script's {allowed, taken}; None: it has not run
    used: bool = False

    @property
    def held(self) -> bool:
        """A place taken and not used by a call (yet)."""
        return self.outcome is not None and int(self.outcome[0]) == 1 and not self.used


class _Places:
    """The place-ahead state of one request (inside places_taken_ahead)."""

    ahead: _Ahead | None = None


_places: ContextVar[_Places | None] = ContextVar("quota_places_ahead", default=None)


@contextmanager
def places_taken_ahead() -> Iterator[None]:
    """The block of one request that may take its place ahead (`companion_for`): a place it did not use is
    given back when the block ends."""
    places = _Places()
    token = _places.set(places)
    try:
        yield
    finally:
        _places.reset(token)
        if places.ahead is not None and places.ahead.held:
            release(places.ahead.reservation, billable=False)


def companion_for(*, org: Any) -> Any:
    """The quota place to take in this request's rate-limit round trip (a saas.core.ratelimit.Companion), or
    None outside places_taken_ahead, once the request has its place, or for an org whose requests are paused
    (the call refuses it anyway)."""
    from saas.core.ratelimit import Companion  # the core layer's; billing only fills it in

    places = _places.get()
    if places is None or (places.ahead is not None and places.ahead.outcome is not None):
        return None  # one place per request (checks run again after a stale copy take it then)
    try:
        state = standing(org=org)
    except PaymentOverdue:
        return None
    reservation = Reservation(org, state.period_start, uuid.uuid4().hex, state.plan.included_requests)
    ahead = places.ahead = _Ahead(reservation)
    now = time.time()

    def done(outcome: list[Any]) -> None:
        ahead.outcome = outcome

    return Companion(_RESERVE, reservation.keys,
                     [state.request_limit, now, now + RESERVATION_SECONDS, reservation.token, RESERVATION_SECONDS],
                     done)  # fmt: skip


def _taken_ahead(org: Any, period_start: datetime) -> Reservation | None:
    """The place this request took ahead for this org and period, now used; None when there is none to use."""
    places = _places.get()
    ahead = places.ahead if places is not None else None
    if ahead is None or not ahead.held:
        return None
    reservation = ahead.reservation
    if reservation.org.pk != org.pk or reservation.period_start != period_start:
        return None  # another org's call (none here), or the period turned meanwhile: the block gives it back
    ahead.used = True
    return reservation


def reserve(*, org: Any) -> Reservation:
    """A place for one AI request in this period, or QuotaExceeded naming the limit."""
    state = standing(org=org)
    period_start = state.period_start
    limit = state.request_limit
    if (ahead := _taken_ahead(org, period_start)) is not None:
        return ahead
    reservation = Reservation(org, period_start, uuid.uuid4().hex, state.plan.included_requests)
    try:
        redis = get_redis()
        _resync(redis)
        now = time.time()
        for _ in range(2):
            allowed, taken = _script("reserve")(keys=reservation.keys, args=[
                limit, now, now + RESERVATION_SECONDS, reservation.token, RESERVATION_SECONDS])  # fmt: skip
            if allowed == -1:  # not in Redis (a new period, a restarted Redis): count the ledger
                used = on_loop.blocking(_settled, org, period_start)
                redis.set(reservation.keys[0], used, nx=True, ex=PERIOD_KEY_SECONDS)
                continue
            if allowed == 0:
                raise QuotaExceeded(plan=state.plan, used=int(taken), limit=limit, org=org)
            return reservation
    except redis_errors as exc:
        logger.warning("Quota counter unavailable (%s); counting org %s's usage in PostgreSQL", exc, org.pk)
        return on_loop.blocking(_reserve_from_database, reservation, limit=limit, plan=state.plan)
    raise RuntimeError("the quota counter could not be seeded")  # pragma: no cover (SET NX then GET)


def _settled(org: Any, period_start: datetime) -> int:
    return int(UsageEvent.objects.for_org(org).filter(period_start=period_start, kind="request").count())


# Counters this process charged past while Redis was down: their Redis copies are stale, and are dropped (to be
# seeded again from the usage ledger) as soon as Redis answers again.
_unsynced: set[str] = set()


def _resync(redis: Any) -> None:
    if _unsynced:
        stale = list(_unsynced)
        redis.delete(*stale)
        _unsynced.difference_update(stale)


def _reserve_from_database(reservation: Reservation, *, limit: int, plan: Any) -> Reservation:
    """Redis is down: the period's settled requests, counted under a per-org lock so that concurrent checks
    of one org take turns."""
    org = reservation.org
    _unsynced.add(reservation.keys[0])
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [key_prefix(org.pk)])
        used = _settled(org, reservation.period_start)
    if limit >= 0 and used >= limit:
        raise QuotaExceeded(plan=plan, used=used, limit=limit, org=org)
    return Reservation(org, reservation.period_start, reservation.token, reservation.included, in_redis=False)


def release(reservation: Reservation, *, billable: bool) -> None:
    """The call ended: give its place back, counting it as used when it was billable (its usage row is written
    with its ledger row). A Redis outage here loses nothing: the place expires on its own and the row is
    counted at the next seeding."""
    if not reservation.in_redis:
        return
    try:
        used = int(_script("settle")(keys=reservation.keys, args=[reservation.token, "1" if billable else "0"]))
    except Exception:
        logger.warning("Could not settle a quota reservation of org %s", reservation.org.pk)
        return
    settled(reservation, used)


def thresholds_crossed(reservation: Reservation, used: int) -> bool:
    """Whether settling a reservation at `used` crossed a usage warning's threshold (no I/O)."""
    return bool(usage_thresholds_crossed(included=reservation.included, before=used - 1, after=used))


def settled(reservation: Reservation, used: int) -> None:
    """After a settle that counted the period's `used`-th request: the usage warnings whose threshold it
    crossed are queued."""
    for threshold in usage_thresholds_crossed(included=reservation.included, before=used - 1, after=used):
        on_loop.blocking(transaction.on_commit, partial(_warn_later, str(reservation.org.pk), threshold))


def _warn_later(org_id: str, threshold: int) -> None:
    try:
        warn_usage.delay(org_id, threshold)
    except Exception:  # a broker outage must not fail the answer; the next threshold warns again
        logger.warning("Could not queue the %s%% usage warning of org %s", threshold, org_id)
