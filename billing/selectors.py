"""Reads: which plan an org is on now, its billing period and limits, and its usage."""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.utils import timezone

from billing.catalogue import sync_plans
from billing.models import OrgBilling, Plan
from saas.core import on_loop
from saas.core.memo import Memo, register

MAX_ORGS = 10_000

# The bytes an org stores, counted by the layer that stores them (documents registers at startup: billing sits
# below it and cannot import it).
_storage_counters: list[Any] = []


def register_storage_counter(count: Any) -> None:
    _storage_counters.append(count)


def storage_used(*, org: Any) -> int:
    return sum(count(org) for count in _storage_counters)


def plan_allows_model(*, org_id: Any, alias: str) -> bool:
    """Whether the org's plan includes this model (a plan without a list includes every model)."""
    allowed = memo.current().plan(org_id).allowed_models
    return not allowed or alias in allowed


def api_rate_limit(org: Any) -> str | None:
    return billing_state(org=org).plan.api_rate_limit or None


def plan_rate_limits(org: Any) -> dict[str, str]:
    """The rates the org's plan sets, by bucket: "org" (the API's general org limit) and "<endpoint>:org",
    "<endpoint>:key" (saas/core/api.py); a bucket missing here takes the server's rate."""
    plan = billing_state(org=org).plan
    rates = {f"{endpoint}:{per}": rate for endpoint, by in (plan.endpoint_rate_limits or {}).items()
             for per, rate in by.items() if rate}  # fmt: skip
    if plan.api_rate_limit:
        rates["org"] = plan.api_rate_limit
    return rates


def members_limit(org: Any) -> int | None:
    return billing_state(org=org).plan.members_limit


def storage_limit_bytes(*, org: Any) -> int | None:
    limit_mb = billing_state(org=org).plan.storage_limit_mb
    return limit_mb * 1024 * 1024 if limit_mb is not None else None


@dataclass
class Catalogue:
    plans: dict[str, Plan]
    default: Plan
    _orgs: dict[Any, OrgBilling | None] = field(default_factory=dict)

    def org_billing(self, org_id: Any) -> OrgBilling | None:
        if org_id in self._orgs:
            return self._orgs[org_id]
        billing = on_loop.blocking(OrgBilling.objects.for_org(org_id).select_related("plan").first)
        if len(self._orgs) < MAX_ORGS:
            self._orgs[org_id] = billing
        return billing

    def plan(self, org_id: Any) -> Plan:
        """The plan in force: a canceled subscription falls back to the default plan."""
        billing = self.org_billing(org_id)
        return self.default if billing is None or billing.status == OrgBilling.Status.CANCELED else billing.plan


def _load() -> Catalogue:
    plans = {plan.slug: plan for plan in Plan.objects.all()}
    default = next((plan for plan in plans.values() if plan.is_default), None)
    if default is None:  # a database without the seeded catalogue (a flushed test database)
        sync_plans(Plan)
        return _load()
    return Catalogue(plans, default)


memo = register(Memo("billing", _load, max_age=lambda: settings.LLM_CONFIG_CACHE_SECONDS))


@dataclass(frozen=True)
class BillingState:
    plan: Plan
    billing: OrgBilling | None
    period_start: datetime
    period_end: datetime
    restricted: bool = False  # past due for longer than the grace period: AI requests are refused

    @property
    def status(self) -> str:
        return self.billing.status if self.billing else OrgBilling.Status.FREE

    @property
    def request_limit(self) -> int:
        """AI requests allowed this period; -1: no limit (overage without a spend cap)."""
        plan = self.plan
        if plan.hard_cap:
            return plan.included_requests
        cap = self.billing.spend_cap_usd if self.billing else None
        if cap is None or plan.price_per_extra_request <= 0:
            return -1
        return plan.included_requests + int(cap / plan.price_per_extra_request)


def _calendar_month(now: datetime) -> tuple[datetime, datetime]:
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


def billing_state(*, org: Any, now: datetime | None = None) -> BillingState:
    now = now or timezone.now()
    catalogue = memo.current()
    billing = catalogue.org_billing(org.pk)
    plan = catalogue.plan(org.pk)
    if billing and billing.current_period_start and billing.current_period_end and (
        billing.current_period_start <= now < billing.current_period_end
    ):  # fmt: skip
        start, end = billing.current_period_start, billing.current_period_end
    else:
        start, end = _calendar_month(now)
    grace = timedelta(days=settings.BILLING_PAST_DUE_GRACE_DAYS)
    restricted = bool(billing and billing.status == OrgBilling.Status.PAST_DUE and billing.past_due_since
                      and billing.past_due_since + grace <= now)  # fmt: skip
    return BillingState(plan, billing, start, end, restricted)


def usage_totals(*, org: Any) -> dict[str, Any]:
    """This period's requests, cache hits and model cost against the plan, counted in one query: what the
    Overview shows (usage_summary adds the breakdowns and storage)."""
    from django.db.models import Count, Q, Sum

    from billing.models import UsageEvent

    state = billing_state(org=org)
    plan = state.plan
    totals = (
        UsageEvent.objects.for_org(org)
        .filter(period_start=state.period_start)
        .aggregate(
            used=Count("id", filter=Q(kind=UsageEvent.Kind.REQUEST)),
            cache_hits=Count("id", filter=Q(kind=UsageEvent.Kind.CACHE_HIT)),
            cost=Sum("cost_usd"),
        )
    )
    used, cache_hits, model_cost = totals["used"], totals["cache_hits"], totals["cost"] or Decimal(0)
    overage = 0 if plan.hard_cap else max(0, used - plan.included_requests)
    projected = (plan.monthly_price_usd + overage * plan.price_per_extra_request
                 + cache_hits * plan.price_per_cache_hit)  # fmt: skip
    limit = state.request_limit
    return {
        "period": {"start": state.period_start.isoformat(), "end": state.period_end.isoformat()},
        "plan": {"slug": plan.slug, "name": plan.name, "hard_cap": plan.hard_cap}, "status": state.status,
        "ai_requests": {"used": used, "included": plan.included_requests, "limit": None if limit < 0 else limit,
                        "remaining": None if limit < 0 else max(0, limit - used)},
        "cache_hits": cache_hits, "cost_usd": f"{model_cost:f}", "overage_requests": overage,
        "spend_cap_usd": None if state.billing is None or state.billing.spend_cap_usd is None
        else f"{state.billing.spend_cap_usd:.2f}",
        "projected_bill_usd": f"{projected:.2f}",
    }  # fmt: skip


def usage_summary(*, org: Any) -> dict[str, Any]:
    """This period's usage against the plan: what `GET /api/v1/usage` and the billing page show."""
    from django.db.models import Count, Sum

    from billing.models import UsageEvent

    state = billing_state(org=org)
    requests = UsageEvent.objects.for_org(org).filter(period_start=state.period_start, kind=UsageEvent.Kind.REQUEST)

    def breakdown(field: str) -> list[dict[str, Any]]:
        rows = requests.values(field).annotate(count=Count("id"), cost=Sum("cost_usd")).order_by("-count", field)
        return [{field: row[field], "ai_requests": row["count"], "cost_usd": f"{row['cost'] or 0:f}"} for row in rows]

    return {
        **usage_totals(org=org),
        "by_feature": breakdown("feature"), "by_model": breakdown("model"),
        "storage": {"used_bytes": storage_used(org=org), "limit_bytes": storage_limit_bytes(org=org)},
    }  # fmt: skip


def invoice_list(*, org: Any, limit: int = 12) -> list[dict[str, Any]]:
    """The org's latest Stripe invoices, as dj-stripe stored them from the webhooks (read defensively: fields
    Stripe leaves out of an invoice are shown as missing, not as an error page)."""
    from djstripe.models import Invoice

    billing = billing_state(org=org).billing
    if billing is None or not billing.stripe_customer_id:
        return []
    rows = Invoice.objects.filter(customer_id=billing.stripe_customer_id).order_by("-created")[:limit]
    invoices = []
    for row in rows:
        data = row.stripe_data or {}
        invoices.append({
            "id": row.id, "number": data.get("number") or row.id, "created": row.created,
            "total": Decimal(data.get("total") or 0) / 100, "currency": str(data.get("currency") or "usd").upper(),
            "status": data.get("status") or "", "url": data.get("hosted_invoice_url") or "",
        })  # fmt: skip
    return invoices
