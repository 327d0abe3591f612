"""The usage charts' data: per day and per feature, model, member and key, summed in SQL from the usage ledger
(sums match the rows), org-scoped and over a bounded range; the billing page and the API draw and serve it."""

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from accounts import permissions
from billing import charts, usage_series
from billing.models import UsageEvent
from saas.core.errors import ApplicationError
from saas.llm.models import LLMCall
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import MembershipFactory, OrganizationFactory

pytestmark = pytest.mark.django_db


def _usage(org, when: datetime, *, kind="request", feature="chat", model="local", cost="0.01", user=None, key=None):
    call = LLMCall.all_orgs.create(organization=org, feature=feature, model_requested=model, user=user, api_key=key)
    event = UsageEvent.all_orgs.create(
        organization=org, llm_call=call, kind=kind, feature=feature, model=model, cost_usd=Decimal(cost),
        period_start=datetime(2026, 3, 1, tzinfo=UTC),
    )  # fmt: skip
    UsageEvent.all_orgs.filter(pk=event.pk).update(created_at=when)
    return event


@pytest.fixture
def ledger():
    owner: Any = MembershipFactory(role="owner")
    org = owner.organization
    key = issue_key(org, name="CI").api_key
    rows = [
        _usage(org, datetime(2026, 3, 2, 0, 0, tzinfo=UTC), cost="0.10", user=owner.user),
        _usage(org, datetime(2026, 3, 2, 23, 59, tzinfo=UTC), feature="ask", cost="0.20", user=owner.user),
        _usage(org, datetime(2026, 3, 2, 12, 0, tzinfo=UTC), kind="cache_hit", cost="0", user=owner.user),
        _usage(org, datetime(2026, 3, 4, 8, 0, tzinfo=UTC), feature="crew", model="gpt-4o-mini", cost="0.05", key=key),
        _usage(org, datetime(2026, 3, 9, 8, 0, tzinfo=UTC), cost="9"),  # outside the range asked below
    ]
    other: Any = MembershipFactory()
    _usage(other.organization, datetime(2026, 3, 2, 9, 0, tzinfo=UTC), cost="5")
    return owner, key, rows


def test_daily_sums_match_the_rows_and_empty_days_are_zero(ledger):
    owner, _, rows = ledger
    days = usage_series.usage_daily(org=owner.organization, start=date(2026, 3, 1), end=date(2026, 3, 5))
    assert [(d.day.day, d.requests, d.cache_hits, d.cost_usd) for d in days] == [
        (1, 0, 0, Decimal(0)), (2, 2, 1, Decimal("0.30")), (3, 0, 0, Decimal(0)), (4, 1, 0, Decimal("0.05")),
        (5, 0, 0, Decimal(0)),
    ]  # fmt: skip
    in_range = [r for r in rows if r.pk != rows[-1].pk]
    assert sum(d.cost_usd for d in days) == sum(r.cost_usd for r in in_range)


def test_breakdowns_by_feature_model_member_and_key(ledger):
    owner, _, _ = ledger
    org, span = owner.organization, {"start": date(2026, 3, 1), "end": date(2026, 3, 5)}

    def by(what: str) -> list[tuple[str, int, Decimal]]:
        return [
            (r["label"], r["ai_requests"], r["cost_usd"])
            for r in usage_series.usage_breakdown(org=org, by=what, **span)
        ]

    assert by("feature") == [("ask", 1, Decimal("0.20")), ("chat", 1, Decimal("0.10")), ("crew", 1, Decimal("0.05"))]
    assert by("model") == [("local", 2, Decimal("0.30")), ("gpt-4o-mini", 1, Decimal("0.05"))]
    assert by("member") == [
        (owner.user.email, 2, Decimal("0.30")),
        (usage_series.NO_LABEL["member"], 1, Decimal("0.05")),
    ]
    assert by("key") == [(usage_series.NO_LABEL["key"], 2, Decimal("0.30")), ("CI", 1, Decimal("0.05"))]
    with pytest.raises(ApplicationError):
        usage_series.usage_breakdown(org=org, by="colour", **span)


def test_a_range_is_bounded_and_ordered(ledger):
    owner, _, _ = ledger
    with pytest.raises(ApplicationError, match="at most 92 days"):
        usage_series.usage_daily(org=owner.organization, start=date(2026, 1, 1), end=date(2026, 6, 1))
    with pytest.raises(ApplicationError, match="ends before"):
        usage_series.usage_daily(org=owner.organization, start=date(2026, 3, 5), end=date(2026, 3, 1))


def test_the_chart_draws_one_bar_per_day_scaled_to_the_largest():
    days = [usage_series.Day(date(2026, 3, d), requests, 0, Decimal(0)) for d, requests in ((1, 0), (2, 4), (3, 2))]
    chart = charts.daily_chart(days, metric="requests", title="AI requests per day")
    assert chart.bars[0].height == 0 and chart.bars[1].height == 2 * chart.bars[2].height > 0
    assert chart.bars[1].title == "Mon 2 Mar: 4 AI requests" and chart.total == "6" and chart.has_data


def test_the_billing_page_and_the_overview_draw_the_charts(client, ledger):
    owner, _, _ = ledger
    _usage(owner.organization, datetime.now(UTC), cost="0.25", user=owner.user)  # in the current period
    client.force_login(owner.user)
    for path in ("billing/", ""):
        html = client.get(f"/o/{owner.organization.slug}/{path}").content.decode()
        assert 'data-chart="chart-requests" data-has-data="true"' in html
        assert html.count('<rect class="bar"') >= 28  # a bar per day of the period, and the breakdown bars
    assert permissions  # imported for the fixtures' roles


def test_the_api_serves_the_series_for_the_keys_org_only(ledger):
    from tests.accounts.conftest import key_client

    owner, _, _ = ledger
    client = key_client(issue_key(owner.organization, scopes=["read"]).secret)
    body = client.get("/api/v1/usage/daily?start=2026-03-01&end=2026-03-05").json()
    assert [d["ai_requests"] for d in body["days"]] == [0, 2, 0, 1, 0]
    assert sum(Decimal(d["cost_usd"]) for d in body["days"]) == Decimal("0.35")  # not the other org's 5
    assert body["by_key"][-1] == {"label": "CI", "ai_requests": 1, "cost_usd": "0.05000000"}
    bad = client.get("/api/v1/usage/daily?start=March")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid"
    too_long = client.get("/api/v1/usage/daily?start=2026-01-01&end=2026-12-31")
    assert too_long.status_code == 400


@pytest.mark.parametrize("start", ["", "20261201", "2026-12-1", "yesterday"])
def test_the_daily_usage_api_refuses_a_date_that_is_not_yyyy_mm_dd(start):
    org = OrganizationFactory()
    client = key_client(issue_key(org, scopes=["read"]).secret)
    response = client.get("/api/v1/usage/daily", {"start": start})
    assert response.status_code == 400, response.content
    assert response.json()["error"]["details"]["fields"] == {"start": ["Write a date as YYYY-MM-DD."]}
