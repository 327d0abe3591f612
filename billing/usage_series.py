"""Usage over time and by who and what, for the charts (billing page, Overview) and `GET /api/v1/usage/daily`.

Aggregated in SQL over the usage ledger (UsageEvent), org-scoped, over a bounded range of whole UTC days. A
member and a key are read through the gateway's ledger row the event points to (`llm_call`, a string foreign
key: billing imports nothing from the gateway); an event whose call was deleted by retention counts as
"unknown".
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, Sum
from django.db.models.functions import Coalesce, TruncDate

from billing.models import UsageEvent
from saas.core.errors import ApplicationError

MAX_DAYS = 92
BREAKDOWNS = {
    "feature": ("feature", "Feature"),
    "model": ("model", "Model"),
    "member": ("llm_call__user__email", "Member"),
    "key": ("llm_call__api_key__name", "API key"),
}
NO_LABEL = {"feature": "other", "model": "none", "member": "no member (API key or system)", "key": "no key (browser)"}


@dataclass(frozen=True)
class Day:
    day: date
    requests: int
    cache_hits: int
    cost_usd: Decimal

    def as_json(self) -> dict[str, Any]:
        return {"day": self.day.isoformat(), "ai_requests": self.requests, "cache_hits": self.cache_hits,
                "cost_usd": f"{self.cost_usd:f}"}  # fmt: skip


def _bounds(start: date, end: date) -> tuple[datetime, datetime]:
    """[start, end] as whole UTC days; refused when reversed or longer than MAX_DAYS."""
    if end < start:
        raise ApplicationError("The range ends before it starts.", code="invalid")
    if (end - start).days + 1 > MAX_DAYS:
        raise ApplicationError(f"A range is at most {MAX_DAYS} days.", code="invalid")
    return (datetime(start.year, start.month, start.day, tzinfo=UTC),
            datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1))  # fmt: skip


def _events(org: Any, start: date, end: date) -> Any:
    since, until = _bounds(start, end)
    return UsageEvent.objects.for_org(org).filter(created_at__gte=since, created_at__lt=until)


def usage_daily(*, org: Any, start: date, end: date) -> list[Day]:
    """One row per day of [start, end] (days without usage included, as zeros)."""
    rows = (
        _events(org, start, end)
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day")
        .annotate(
            requests=Count("id", filter=Q(kind=UsageEvent.Kind.REQUEST)),
            cache_hits=Count("id", filter=Q(kind=UsageEvent.Kind.CACHE_HIT)),
            cost=Coalesce(Sum("cost_usd"), Decimal(0)),
        )
    )
    found = {row["day"]: row for row in rows}
    days = []
    for offset in range((end - start).days + 1):
        day = start + timedelta(days=offset)
        row = found.get(day)
        days.append(Day(day, row["requests"], row["cache_hits"], row["cost"]) if row else Day(day, 0, 0, Decimal(0)))
    return days


def usage_breakdown(*, org: Any, by: str, start: date, end: date, limit: int = 8) -> list[dict[str, Any]]:
    """AI requests and cost per feature, model, member or key, largest first; the rest summed as "others"."""
    if by not in BREAKDOWNS:
        raise ApplicationError(f"Break usage down by one of: {', '.join(BREAKDOWNS)}.", code="invalid")
    field = BREAKDOWNS[by][0]
    rows = list(
        _events(org, start, end)
        .values(field)
        .annotate(
            requests=Count("id", filter=Q(kind=UsageEvent.Kind.REQUEST)),
            cost=Coalesce(Sum("cost_usd"), Decimal(0)),
        )
        .order_by("-requests", "-cost", field)
    )
    result = [{"label": row[field] or NO_LABEL[by], "ai_requests": row["requests"], "cost_usd": row["cost"]}
              for row in rows[:limit]]  # fmt: skip
    if len(rows) > limit:
        rest = rows[limit:]
        result.append({"label": f"{len(rest)} others", "ai_requests": sum(r["requests"] for r in rest),
                       "cost_usd": sum((r["cost"] for r in rest), Decimal(0))})  # fmt: skip
    return result


def period_days(*, start: datetime, end: datetime) -> tuple[date, date]:
    """A billing period as whole UTC days, its first to its last (its last MAX_DAYS if it is longer)."""
    first, last = start.astimezone(UTC).date(), (end.astimezone(UTC) - timedelta(microseconds=1)).date()
    last = max(first, last)
    if (last - first).days + 1 > MAX_DAYS:
        first = last - timedelta(days=MAX_DAYS - 1)
    return first, last
