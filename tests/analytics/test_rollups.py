"""The hourly rollups: their numbers equal the ledger's own aggregates, a rerun changes nothing, an hour without
calls has no row (and loses its row when its calls go), one org's calls never reach another's rollups, and the
dashboard built on them says what the raw ledger says, the open hour included."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db.models import Count, Q, Sum

from agents.models import Feedback
from analytics import insights, privacy, rollups
from analytics.models import LATENCY_BOUNDS_MS, HourlyRollup, RollupState
from analytics.tasks import rollup_hours as rollup_task
from saas.core.tenancy import org_scope
from saas.llm.models import LLMCall
from tests.accounts.factories import OrganizationFactory
from tests.agents.factories import FeedbackFactory, MessageFactory
from tests.llm.factories import LLMCallFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 14, 25, tzinfo=UTC)  # 25 minutes into the 14:00 hour
OPEN = NOW.replace(minute=0)


def call(org, at: datetime, **fields) -> LLMCall:
    made: Any = LLMCallFactory(organization=org, **fields)
    LLMCall.all_orgs.filter(pk=made.pk).update(created_at=at)
    made.created_at = at
    return made


def feedback(org, at: datetime, **fields) -> Feedback:
    made: Any = FeedbackFactory(organization=org, **fields)
    Feedback.all_orgs.filter(pk=made.pk).update(created_at=at)
    return made


def ledger(org) -> list[LLMCall]:
    """Five hours of calls of every kind: 10:00 to 14:00; 12:00 has none."""
    made = []
    for hour, minute in ((10, 5), (10, 40), (11, 0), (11, 59), (13, 30), (14, 10)):
        at = NOW.replace(hour=hour, minute=minute)
        made += [
            call(org, at, feature="ask", model_used="small", latency_ms=120, ttft_ms=40, prompt_tokens=100,
                 completion_tokens=20, cost_usd=Decimal("0.00012"), groundedness=1.0),
            call(org, at, feature="ask", model_used="small", latency_ms=900, ttft_ms=None, cache="exact",
                 cost_saved_usd=Decimal("0.0005"), groundedness=0.4),
            call(org, at, feature="chat", model_used="large", latency_ms=2500, ttft_ms=300, prompt_tokens=700,
                 completion_tokens=300, cost_usd=Decimal("0.021")),
            call(org, at, feature="chat", model_used="", model_requested="large", status="error",
                 error_class="timeout", latency_ms=30000),
            call(org, at, feature="generate", model_used="large", status="error", error_class="rate_limited",
                 latency_ms=10),
            call(org, at, feature="chat", model_used="large", status="blocked", latency_ms=3),
        ]  # fmt: skip
    # Feedback: on an ask call (its own link) and on a chat message that points at its call.
    feedback(org, NOW.replace(hour=10, minute=50), llm_call=made[0], message=None, rating=-1)
    feedback(org, NOW.replace(hour=11, minute=10), llm_call=made[0], message=None, rating=1, user=None)
    message = MessageFactory(organization=org, llm_call=made[2], model="large")
    feedback(org, NOW.replace(hour=13, minute=45), message=message, rating=1)
    return made


def stored(org) -> list[dict]:
    with org_scope(org):
        return list(HourlyRollup.objects.order_by("hour", "feature", "model").values(*rollups.COLUMNS))


def test_rollup_numbers_equal_the_ledgers_own_aggregates():
    org = OrganizationFactory()
    ledger(org)
    rollups.rollup_hours(org_ids=[org.pk], now=NOW)
    rows = stored(org)
    by_key = {(row["hour"].hour, row["feature"], row["model"]): row for row in rows}
    # Whole-range sums against the ORM's aggregates of the ledger itself.
    expected = LLMCall.all_orgs.filter(organization=org).aggregate(
        requests=Count("id"), errors=Count("id", filter=Q(status="error")), tokens=Sum("prompt_tokens"),
        cost=Sum("cost_usd"), saved=Sum("cost_saved_usd"), latency=Sum("latency_ms"),
        hits=Count("id", filter=Q(cache__in=["exact", "semantic"])), grounded=Count("groundedness"),
    )  # fmt: skip
    assert sum(row["requests"] for row in rows) == expected["requests"] == 36
    assert sum(row["errors"] for row in rows) == expected["errors"] == 12
    assert sum(row["prompt_tokens"] for row in rows) == expected["tokens"]
    assert sum(row["cost_usd"] for row in rows) == expected["cost"]
    assert sum(row["cost_saved_usd"] for row in rows) == expected["saved"]
    assert sum(row["latency_sum_ms"] for row in rows) == expected["latency"]
    assert sum(row["cache_hits"] for row in rows) == expected["hits"] == 6
    assert sum(row["grounded_count"] for row in rows) == expected["grounded"] == 12
    # Per hour, feature and model: the 10:00 ask/small row in detail.
    ask = by_key[(10, "ask", "small")]
    assert (ask["requests"], ask["ok"], ask["cache_hits"], ask["ttft_count"]) == (4, 4, 2, 2)
    assert ask["latency_hist"][LATENCY_BOUNDS_MS.index(150)] == 2  # 120 ms: the (100, 150] bucket
    assert ask["latency_hist"][LATENCY_BOUNDS_MS.index(1000)] == 2  # 900 ms: (750, 1000]
    assert sum(ask["latency_hist"]) == 4 and sum(ask["ttft_hist"]) == 2
    assert ask["grounded_hist"][10] == 2 and ask["grounded_hist"][4] == 2  # 1.0 alone; 0.4 in [0.4, 0.5)
    assert ask["grounded_sum"] == pytest.approx(2.8)
    assert ask["feedback_down"] == 1 and ask["feedback_up"] == 0  # given at 10:50
    assert by_key[(11, "ask", "small")]["feedback_up"] == 1  # given at 11:10, on a 10:05 call
    assert by_key[(13, "chat", "large")]["feedback_up"] == 1  # through the message's call
    # A failed call that no model answered counts under the model asked for; errors by kind.
    chat = by_key[(10, "chat", "large")]
    assert chat["error_kinds"] == {"timeout": 2} and chat["blocked"] == 2
    assert chat["latency_hist"][-1] == 0 and chat["latency_hist"][LATENCY_BOUNDS_MS.index(30000)] == 2
    assert by_key[(11, "generate", "large")]["error_kinds"] == {"rate_limited": 2}
    # The open hour (14:00) is stored too, but the mark stays at its start: the dashboard reads it live.
    assert (14, "ask", "small") in by_key
    with org_scope(org):
        assert RollupState.objects.get().rolled_until == OPEN


def test_a_rerun_writes_the_same_rows_and_nothing_more():
    org = OrganizationFactory()
    ledger(org)
    rollup_task.apply(kwargs={"org_ids": [str(org.pk)], "hours": 6}).get()  # the task itself, through Celery
    first = stored(org)
    rollups.rollup_hours(org_ids=[org.pk], now=NOW, hours=6)
    rollups.rollup_hours(org_ids=[org.pk], now=NOW, hours=6)
    assert stored(org) == first
    assert HourlyRollup.all_orgs.filter(organization=org).count() == len(first)


def test_an_hour_without_calls_has_no_row_and_loses_its_row_when_its_calls_go():
    org = OrganizationFactory()
    made = ledger(org)
    rollups.rollup_hours(org_ids=[org.pk], now=NOW)
    hours = {row["hour"].hour for row in stored(org)}
    assert hours == {10, 11, 13, 14}  # 12:00 had no calls
    rng = insights.Range("custom", NOW.replace(hour=10, minute=0), OPEN + rollups.HOUR, "hour")
    series = {item["start"][11:13]: item["requests"] for item in insights.insights_get(org=org, rng=rng, now=NOW)[
        "series"]}  # fmt: skip
    assert series == {"10": 12, "11": 12, "12": 0, "13": 6, "14": 6}
    # The 13:00 calls are deleted (an erasure, say): the rerun removes that hour's rollups.
    LLMCall.all_orgs.filter(pk__in=[c.pk for c in made if c.created_at.hour == 13]).delete()
    rollups.rollup_hours(org_ids=[org.pk], now=NOW)
    assert {row["hour"].hour for row in stored(org) if row["requests"]} == {10, 11, 14}
    # Its feedback (13:45) outlives the call: the hour keeps a feedback-only row, no requests.
    assert [(row["requests"], row["feedback_up"]) for row in stored(org) if row["hour"].hour == 13] == [(0, 1)]


def test_one_orgs_calls_never_reach_another_orgs_rollups_or_dashboard():
    mine, theirs = OrganizationFactory(), OrganizationFactory()
    ledger(mine)
    call(theirs, NOW.replace(hour=11), feature="ask", model_used="secret-model", latency_ms=5)
    feedback(theirs, NOW.replace(hour=11, minute=5), llm_call=call(theirs, NOW.replace(hour=11)), message=None,
             rating=-1)  # fmt: skip
    idle = OrganizationFactory()
    done = rollups.rollup_hours(now=NOW)  # every org with activity
    assert {item.org_id for item in done} == {mine.pk, theirs.pk}
    # A team without calls is marked (not asked again on every run) and has no rows.
    assert RollupState.all_orgs.get(organization=idle).rolled_until == OPEN
    assert not HourlyRollup.all_orgs.filter(organization=idle).exists()
    assert all(row["model"] != "secret-model" for row in stored(mine))
    assert sum(row["requests"] for row in stored(theirs)) == 2
    assert sum(row["feedback_down"] for row in stored(theirs)) == 1
    rng = insights.range_parse(key="24h", now=NOW)
    data = insights.insights_get(org=mine, rng=rng, now=NOW)
    assert data["totals"]["requests"] == 36 and data["totals"]["feedback_down"] == 1
    assert "secret-model" not in str(data)


def test_the_dashboard_from_rollups_equals_the_dashboard_from_the_raw_ledger_with_the_open_hour_live():
    org = OrganizationFactory()
    ledger(org)
    rollups.rollup_hours(org_ids=[org.pk], now=NOW)
    # After the rollup, more calls arrive in the open hour: the dashboard shows them at once.
    call(org, NOW.replace(minute=20), feature="ask", model_used="small", latency_ms=60000, status="error",
         error_class="upstream_error")  # fmt: skip
    rng = insights.range_parse(key="24h", now=NOW)
    from_rollups = insights.insights_get(org=org, rng=rng, now=NOW)
    from_ledger = insights.insights_get(org=org, rng=rng, now=NOW, source="ledger")
    assert from_rollups["rows_read"] < 40  # a row per hour, feature and model
    for data in (from_rollups, from_ledger):
        data.pop("rows_read")
    assert from_rollups == from_ledger
    totals = from_rollups["totals"]
    assert totals["requests"] == 37 and totals["errors"] == 13 and totals["blocked"] == 6
    assert {k["kind"]: k["count"] for k in from_rollups["errors_by_kind"]} == {
        "timeout": 6, "rate_limited": 6, "upstream_error": 1, "blocked": 6}  # fmt: skip
    assert totals["cache_hit_rate"] == round(6 / 37, 4)
    assert Decimal(totals["cost_saved_usd"]) == Decimal("0.0005") * 6
    assert (totals["feedback_up"], totals["feedback_down"]) == (2, 1)
    assert totals["thumbs_down_share"] == round(1 / 3, 4) and totals["feedback_rate"] == round(3 / 18, 4)
    assert totals["groundedness_mean"] == 0.7
    assert from_rollups["groundedness"][10]["answers"] == 6 and from_rollups["groundedness"][4]["answers"] == 6
    pair = next(p for p in from_rollups["by_model_feature"] if (p["model"], p["feature"]) == ("small", "ask"))
    assert pair["requests"] == 13 and pair["ttft_p50_ms"] is not None
    # The beat catches up: the same figures, now from stored rows.
    rollups.rollup_hours(org_ids=[org.pk], now=NOW + timedelta(hours=1))
    later = insights.insights_get(org=org, rng=rng, now=NOW + timedelta(hours=1))
    later.pop("rows_read")
    assert later == from_ledger


def test_percentiles_are_read_from_the_buckets():
    hist = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    hist[LATENCY_BOUNDS_MS.index(100)] = 50  # (75, 100]
    hist[LATENCY_BOUNDS_MS.index(1000)] = 50  # (750, 1000]
    assert 75 <= (insights.percentile(hist, 0.5) or 0) <= 100
    assert 750 <= (insights.percentile(hist, 0.95) or 0) <= 1000
    assert insights.percentile([0] * len(hist), 0.5) is None
    hist[-1] = 1000  # above the last bound: reads as the last bound
    assert insights.percentile(hist, 0.99) == LATENCY_BOUNDS_MS[-1]


def test_a_team_never_rolled_up_is_backfilled_from_its_first_call_and_erasure_deletes_its_rollups():
    org = OrganizationFactory()
    call(org, NOW - timedelta(days=20), feature="ask", model_used="small", latency_ms=100)
    call(org, NOW - timedelta(hours=1), feature="ask", model_used="small", latency_ms=100)
    rollups.rollup_hours(now=NOW)
    assert sum(row["requests"] for row in stored(org)) == 2
    while privacy.rollups_erase_org(org_id=org.pk, batch_size=1):
        pass
    assert not HourlyRollup.all_orgs.filter(organization=org).exists()
    assert not RollupState.all_orgs.filter(organization=org).exists()
