"""The rollups: their numbers equal the ledger's own aggregates, a rerun changes nothing, an hour without calls
has no row (and loses its row when its calls go), one org's calls never reach another's rollups, whole days are
folded into day rows that are the sums of their hours (late rows and re-rolls included), and the dashboard built
on them (days + hours, or hours only) says what the raw ledger says, the open hour included."""

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db.models import Count, Q, Sum

from agents.models import Feedback
from analytics import insights, privacy, rollups
from analytics.models import LATENCY_BOUNDS_MS, DailyRollup, HourlyRollup, RollupState
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
    assert [row["requests"] for row in day_rows(org).values()] == [1]  # the day 20 days ago, folded
    while privacy.rollups_erase_org(org_id=org.pk, batch_size=1):
        pass
    assert not DailyRollup.all_orgs.filter(organization=org).exists()
    assert not HourlyRollup.all_orgs.filter(organization=org).exists()
    assert not RollupState.all_orgs.filter(organization=org).exists()


# --- The day level ---------------------------------------------------------------------------------------------

DAY = timedelta(days=1)


def days_ledger(org, model: str = "small") -> list[LLMCall]:
    """Calls on the four days up to NOW's (17 to 20 November), several across midnights, with feedback."""
    made = []
    for day, hour, minute in ((17, 0, 0), (17, 23, 59), (18, 0, 30), (18, 12, 0), (19, 23, 10), (20, 0, 5),
                              (20, 9, 0)):  # fmt: skip
        at = datetime(2026, 11, day, hour, minute, tzinfo=UTC)
        made += [
            call(org, at, feature="ask", model_used=model, latency_ms=130 + 40 * day, ttft_ms=35, prompt_tokens=90,
                 completion_tokens=15, cost_usd=Decimal("0.00011"), groundedness=0.9),
            call(org, at, feature="chat", model_used="", model_requested="large", status="error",
                 error_class="timeout" if hour % 2 else "upstream_error", latency_ms=30000),
            call(org, at, feature="generate", model_used="large", latency_ms=4200, ttft_ms=800,
                 cost_usd=Decimal("0.0031"), cache="semantic", cost_saved_usd=Decimal("0.0004")),
        ]  # fmt: skip
    feedback(org, datetime(2026, 11, 18, 0, 50, tzinfo=UTC), llm_call=made[0], message=None, rating=-1)
    feedback(org, datetime(2026, 11, 19, 23, 55, tzinfo=UTC), llm_call=made[12], message=None, rating=1)
    return made


def three_ways(org, rng, now) -> tuple[dict, dict[str, int]]:
    """The dashboard from days + hours (the page), from hour rows only, and from the raw ledger: every figure
    equal, p50/p95 from the histograms included."""
    data = {source: insights.insights_get(org=org, rng=rng, now=now, source=source) for source in insights.SOURCES}
    read = {source: figures.pop("rows_read") for source, figures in data.items()}
    assert data["rollups"] == data["ledger"]
    assert data["hours"] == data["ledger"]
    return data["rollups"], read


def day_rows(org) -> dict[tuple, dict]:
    with org_scope(org):
        return {(row["day"], row["feature"], row["model"]): row
                for row in DailyRollup.objects.values("day", *rollups.COLUMNS[1:])}  # fmt: skip


def assert_days_are_sums_of_their_hours(org, days_until: datetime) -> None:
    expected: dict[tuple, dict] = {}
    for row in stored(org):
        if row["hour"] >= days_until:
            continue
        key = (rollups.day_floor(row["hour"]), row["feature"], row["model"])
        into = expected.setdefault(key, {"error_kinds": Counter()})
        for name in rollups.COLUMNS[3:]:
            value = row[name]
            if name == "error_kinds":
                into[name].update(value)
            elif isinstance(value, list):
                into[name] = [a + b for a, b in zip(into.get(name, [0] * len(value)), value, strict=True)]
            else:
                into[name] = into.get(name, 0) + value
    days = day_rows(org)
    assert set(days) == set(expected)
    for key, sums in expected.items():
        row = days[key]
        for name, value in sums.items():
            if name == "grounded_sum":
                assert row[name] == pytest.approx(value), (key, name)
            else:
                assert row[name] == (dict(value) if name == "error_kinds" else value), (key, name)


def test_whole_days_are_folded_from_their_hours_and_the_page_reads_them_with_the_same_figures():
    org, theirs = OrganizationFactory(), OrganizationFactory()
    ledger(org)
    days_ledger(org)
    days_ledger(theirs, model="secret-model")  # another team, same days
    rollups.rollup_hours(now=NOW)
    midnight = NOW.replace(hour=0, minute=0)
    with org_scope(org):
        assert RollupState.objects.get().days_until == midnight
    # 17 to 19 November are folded; the 20th (the mark's day) is not yet.
    assert {key[0].day for key in day_rows(org)} == {17, 18, 19}
    assert_days_are_sums_of_their_hours(org, midnight)
    assert sum(row["requests"] for row in day_rows(org).values()) == 6 + 6 + 3
    assert all(key[2] != "secret-model" for key in day_rows(org))
    ranges = [
        insights.range_parse(key="7d", now=NOW),  # 13 Nov 15:00 to the open hour: days 17-19, hours of the 20th
        insights.range_parse(key="30d", now=NOW),
        insights.range_parse(start="2026-11-17", end="2026-11-20", now=NOW),
        insights.range_parse(start="2026-11-18", end="2026-11-19", now=NOW),  # per hour: no day rows read
        insights.range_parse(start="2026-11-18", end="2026-11-18", now=NOW),
    ]
    for rng in ranges:
        data, read = three_ways(org, rng, NOW)
        assert "secret-model" not in str(data)
    data, read = three_ways(org, ranges[0], NOW)
    assert read["rollups"] < read["hours"]  # 3 days x 3 pairs instead of 7 hours x 3 pairs
    totals = data["totals"]
    assert totals["requests"] == 36 + 21 and totals["feedback_down"] == 2 and totals["feedback_up"] == 3
    assert totals["latency_p50_ms"] is not None and totals["latency_p95_ms"] is not None
    assert {k["kind"]: k["count"] for k in data["errors_by_kind"]} == {
        "timeout": 6 + 3, "rate_limited": 6, "upstream_error": 4, "blocked": 6}  # fmt: skip
    by_day = {item["start"][:10]: item["requests"] for item in data["series"]}
    assert (by_day["2026-11-17"], by_day["2026-11-18"], by_day["2026-11-19"], by_day["2026-11-20"]) == (6, 6, 3, 42)
    ask = next(p for p in data["by_model_feature"] if (p["model"], p["feature"]) == ("small", "ask"))
    assert ask["requests"] == 12 + 7 and ask["ttft_p95_ms"] is not None


def test_late_rows_and_rerolls_refold_their_day_and_reruns_change_nothing():
    org = OrganizationFactory()
    made = days_ledger(org)
    rollups.rollup_hours(org_ids=[org.pk], now=NOW)
    after_midnight = datetime(2026, 11, 21, 0, 40, tzinfo=UTC)
    rollups.rollup_hours(org_ids=[org.pk], now=after_midnight)  # folds the 20th
    assert {key[0].day for key in day_rows(org)} == {17, 18, 19, 20}
    first = day_rows(org)
    rollups.rollup_hours(org_ids=[org.pk], now=after_midnight)
    assert day_rows(org) == first  # a rerun writes the same rows, and no more
    # A call of 23:45 on the 20th reaches the ledger late (the stream), after its day was folded.
    call(org, datetime(2026, 11, 20, 23, 45, tzinfo=UTC), feature="ask", model_used="small", latency_ms=90000)
    later = datetime(2026, 11, 21, 1, 20, tzinfo=UTC)  # the beat recomputes 22:00 to 00:59 and the open hour
    rollups.rollup_hours(org_ids=[org.pk], now=later)
    key = (datetime(2026, 11, 20, tzinfo=UTC), "ask", "small")
    assert day_rows(org)[key]["requests"] == first[key]["requests"] + 1
    assert day_rows(org)[key]["latency_hist"][LATENCY_BOUNDS_MS.index(120000)] == 1
    assert_days_are_sums_of_their_hours(org, datetime(2026, 11, 21, tzinfo=UTC))
    week = insights.range_parse(key="7d", now=later)
    three_ways(org, week, later)
    # The 18th's calls are erased and its hours re-rolled: the day row follows.
    LLMCall.all_orgs.filter(pk__in=[c.pk for c in made if c.created_at.day == 18]).delete()
    rollups.rollup_org(org_id=org.pk, start=datetime(2026, 11, 18, tzinfo=UTC),
                       end=datetime(2026, 11, 19, tzinfo=UTC), now=later)  # fmt: skip
    assert_days_are_sums_of_their_hours(org, datetime(2026, 11, 21, tzinfo=UTC))
    on_18th = [row for key, row in day_rows(org).items() if key[0].day == 18]
    assert [(row["requests"], row["feedback_down"]) for row in on_18th] == [(0, 1)]  # its feedback outlives them
    data, _ = three_ways(org, week, later)
    assert {item["start"][:10]: item["requests"] for item in data["series"]}["2026-11-18"] == 0


def test_rollups_made_before_the_day_level_are_read_by_hour_until_the_beat_folds_them():
    org = OrganizationFactory()
    days_ledger(org)
    rollups.rollup_hours(org_ids=[org.pk], now=NOW)
    with org_scope(org):  # as a deployment upgraded from hour rows only finds it
        DailyRollup.objects.all().delete()
        RollupState.objects.update(days_until=None)
    week = insights.range_parse(key="7d", now=NOW)
    _, read = three_ways(org, week, NOW)
    assert read["rollups"] == read["hours"]
    rollups.rollup_hours(org_ids=[org.pk], now=NOW)
    assert {key[0].day for key in day_rows(org)} == {17, 18, 19}
    assert_days_are_sums_of_their_hours(org, NOW.replace(hour=0, minute=0))
    _, read = three_ways(org, week, NOW)
    assert read["rollups"] < read["hours"]
