"""What the dashboards show an org's admins over a range (the Insights page and GET /api/v1/insights): requests,
errors by kind, latency and time to first token (p50/p95) per model and feature, tokens and cost, cache hits and
money saved, feedback, groundedness, and the questions that fail most.

Read from the rollups (analytics/rollups.py): whole days from the day rows when the charts step by day, the
partial days at the edges from the hour rows, and the hours not rolled up yet (the open hour, or more when the
beat task fell behind) from the ledger with the very statement that makes the rollups. PostgreSQL adds it all up
in one statement per chart step, per model and feature, and in all: a 90-day page reads about a row per day,
feature and model and hands Python about a hundred, and the last minutes are on it. Percentiles come from the
rollups' fixed latency buckets (analytics.models.LATENCY_BOUNDS_MS), interpolated inside a bucket.
"""

import json
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Q
from django.utils import timezone

from agents.models import Feedback
from analytics.models import GROUNDEDNESS_BUCKETS, LATENCY_BOUNDS_MS, DailyRollup, HourlyRollup, RollupState
from analytics.rollups import AGGREGATE_SQL, COLUMNS, HOUR, day_ceil, day_floor, hour_floor, summed
from saas.core import crypto
from saas.core.errors import ApplicationError
from saas.llm.models import LLMCall

RANGES = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
DEFAULT_RANGE = "7d"
MAX_DAYS = 92
FAILING_SCAN = 300  # the latest failures of a range read for "top failing questions" (each kind)
QUESTION_FEATURES = ("ask", "chat")


@dataclass(frozen=True)
class Range:
    key: str  # 24h, 7d, 30d or custom
    start: datetime  # whole UTC hours, end exclusive
    end: datetime
    step: str  # "hour" or "day": the charts' bars

    def as_json(self) -> dict[str, str]:
        return {"range": self.key, "start": self.start.isoformat(), "end": self.end.isoformat(), "step": self.step}


def _invalid(field: str, message: str) -> ApplicationError:
    return ApplicationError(message, code="invalid", details={"fields": {field: [message]}})


def _day(value: str, field: str) -> date:
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):  # ISO's full date only (fromisoformat takes more)
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise _invalid(field, f"{field} is a date, written YYYY-MM-DD.") from None


def range_parse(*, key: str = "", start: str = "", end: str = "", now: datetime | None = None) -> Range:
    """A preset (`key`: 24h, 7d, 30d, ending with the open hour) or a custom range of whole UTC days from `start`
    to `end` (both YYYY-MM-DD, inclusive, at most MAX_DAYS days). Anything else is an ApplicationError."""
    now = now or timezone.now()
    if start or end or key == "custom":
        if not start or not end:
            raise _invalid("start" if not start else "end", "A custom range needs both a start and an end date.")
        first, last = _day(start, "start"), _day(end, "end")
        if first > last:
            raise _invalid("end", "The end date is before the start date.")
        if (last - first).days + 1 > MAX_DAYS:
            raise _invalid("end", f"A range is at most {MAX_DAYS} days.")
        if first > now.date():
            raise _invalid("start", "The start date is in the future.")
        begin = datetime(first.year, first.month, first.day, tzinfo=UTC)
        finish = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
        return Range("custom", begin, finish, "hour" if finish - begin <= timedelta(days=2) else "day")
    key = key or DEFAULT_RANGE
    if key not in RANGES:
        raise _invalid("range", f"range is one of {', '.join(RANGES)} (or give start and end dates).")
    finish = hour_floor(now) + HOUR
    return Range(key, finish - RANGES[key], finish, "hour" if RANGES[key] <= timedelta(days=2) else "day")


# --- Reading the rows -------------------------------------------------------------------------------------

SOURCES = ("rollups", "hours", "ledger")


@dataclass(frozen=True)
class Plan:
    """Which table answers which part of [start, end): whole days from DailyRollup (when the charts step by day),
    the edges from HourlyRollup, and from `live_from` on (hours not rolled up yet: the open hour) the ledger."""

    days: tuple[datetime, datetime]
    hours: tuple[tuple[datetime, datetime], tuple[datetime, datetime]]
    live: tuple[datetime, datetime]


def read_plan(*, org: Any, start: datetime, end: datetime, step: str, source: str = "rollups",
              now: datetime | None = None) -> Plan:  # fmt: skip
    """`source`: "rollups" (days, hours at the edges, the ledger after the mark: what the page does), "hours"
    (hour rows only, then the ledger) or "ledger" (the ledger alone): the tests' and the benchmark's references."""
    if source not in SOURCES:
        raise ValueError(source)
    nothing = (start, start)
    if source == "ledger":
        return Plan(nothing, (nothing, nothing), (start, end))
    now = now or timezone.now()
    state = RollupState.objects.for_org(org).first()
    mark = min(state.rolled_until, hour_floor(now)) if state else start
    live_from = min(max(start, mark), end)
    if source == "rollups" and step == "day" and state is not None and state.days_until is not None:
        first_day, last_day = day_ceil(start), min(day_floor(live_from), state.days_until)
        if first_day < last_day:
            return Plan((first_day, last_day), ((start, first_day), (last_day, live_from)), (live_from, end))
    return Plan(nothing, ((start, live_from), nothing), (live_from, end))


def _columns(prefix: str = "") -> str:
    return ", ".join(prefix + name for name in COLUMNS[3:])


def _figures_sql() -> str:
    """One statement: the plan's rows (day rows, hour rows, the ledger's live hours, each in COLUMNS order) added
    up by PostgreSQL per chart step, per feature and model, and in all (GROUPING SETS), with the failed calls
    per error kind of the whole range on the total row. Python receives a row per step and per pair, never the
    rows themselves."""
    daily, hourly = DailyRollup._meta.db_table, HourlyRollup._meta.db_table
    live = AGGREGATE_SQL.replace("%(start)s", "%(live_start)s").replace("%(end)s", "%(live_end)s")
    latency = len(LATENCY_BOUNDS_MS) + 1
    ints = ("requests", "ok", "errors", "cancelled", "blocked")
    return f"""
WITH base AS MATERIALIZED (
  SELECT day AS at, feature, model, {_columns()} FROM {daily}
  WHERE organization_id = %(org)s AND day >= %(days_start)s AND day < %(days_end)s
  UNION ALL
  SELECT date_trunc(%(step)s, hour, 'UTC'), feature, model, {_columns()} FROM {hourly}
  WHERE organization_id = %(org)s AND ((hour >= %(hours_start)s AND hour < %(hours_end)s)
                                       OR (hour >= %(edge_start)s AND hour < %(edge_end)s))
  UNION ALL
  SELECT date_trunc(%(step)s, hour, 'UTC'), feature, model, {_columns("live.")} FROM ({live}) live
), kinds AS (
  SELECT jsonb_object_agg(kind, n) AS kinds FROM (
    SELECT e.key AS kind, sum(e.value::bigint) AS n FROM base, jsonb_each_text(base.error_kinds) e
    WHERE base.errors > 0 GROUP BY 1
  ) per_kind
)
SELECT GROUPING(at, feature, model), at, feature, model,
       {", ".join(f"COALESCE(sum({name}), 0)::bigint" for name in ints)},
       CASE WHEN GROUPING(at, feature, model) = 7 THEN (SELECT kinds FROM kinds) END,
       COALESCE(sum(cache_hits), 0)::bigint, COALESCE(sum(prompt_tokens), 0)::bigint,
       COALESCE(sum(completion_tokens), 0)::bigint, COALESCE(sum(cost_usd), 0), COALESCE(sum(cost_saved_usd), 0),
       COALESCE(sum(latency_sum_ms), 0)::bigint, {summed("latency_hist", latency)},
       COALESCE(sum(ttft_count), 0)::bigint, COALESCE(sum(ttft_sum_ms), 0)::bigint, {summed("ttft_hist", latency)},
       COALESCE(sum(grounded_count), 0)::bigint, COALESCE(sum(grounded_sum), 0)::float,
       {summed("grounded_hist", GROUNDEDNESS_BUCKETS)},
       COALESCE(sum(feedback_up), 0)::bigint, COALESCE(sum(feedback_down), 0)::bigint, count(*)
FROM base GROUP BY GROUPING SETS ((at), (feature, model), ())
"""  # noqa: S608


FIGURES_SQL = _figures_sql()
BY_STEP, BY_PAIR, TOTAL = 3, 4, 7  # GROUPING(at, feature, model): the columns added up, as bits


@dataclass
class Figures:
    """The range added up: per chart step, per (model, feature), in all; rows read from the tables."""

    by_step: dict[datetime, tuple[Any, ...]]
    by_pair: dict[tuple[str, str], tuple[Any, ...]]
    total: tuple[Any, ...]
    rows_read: int


def figures_read(*, org: Any, plan: Plan, step: str) -> Figures:
    """Rows in COLUMNS order (`hour` the step's start, or None), added up as the plan says."""
    (hours_start, hours_end), (edge_start, edge_end) = plan.hours
    params: dict[str, Any] = {
        "org": str(org.pk), "step": step, "days_start": plan.days[0], "days_end": plan.days[1],
        "hours_start": hours_start, "hours_end": hours_end, "edge_start": edge_start, "edge_end": edge_end,
        "live_start": plan.live[0], "live_end": plan.live[1],
    }  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(FIGURES_SQL, params)
        rows = cursor.fetchall()
    by_step: dict[datetime, tuple[Any, ...]] = {}
    by_pair: dict[tuple[str, str], tuple[Any, ...]] = {}
    total: tuple[Any, ...] | None = None
    read = 0
    for grouping, *row in rows:
        figures = tuple(row[:-1])
        if grouping == BY_STEP:
            by_step[row[0]] = figures
        elif grouping == BY_PAIR:
            by_pair[(row[2], row[1])] = figures
        else:
            total, read = figures, row[-1]
    assert total is not None  # an empty grouping set always answers one row
    return Figures(by_step, by_pair, total, read)


# --- Adding rows up ----------------------------------------------------------------------------------------

_I = {name: index for index, name in enumerate(COLUMNS)}
SUMMED = ("requests", "ok", "errors", "cancelled", "blocked", "cache_hits", "prompt_tokens", "completion_tokens",
          "cost_usd", "cost_saved_usd", "latency_sum_ms", "ttft_count", "ttft_sum_ms", "grounded_count",
          "grounded_sum", "feedback_up", "feedback_down")  # fmt: skip
HISTOGRAMS = ("latency_hist", "ttft_hist", "grounded_hist")


class Tally:
    """Sums and histograms of any set of rollup rows (PostgreSQL adds them up: see figures_read)."""

    def __init__(self) -> None:
        self.sums: dict[str, Any] = dict.fromkeys(SUMMED, 0)
        self.sums["cost_usd"] = self.sums["cost_saved_usd"] = Decimal(0)
        self.hists = {
            "latency_hist": [0] * (len(LATENCY_BOUNDS_MS) + 1),
            "ttft_hist": [0] * (len(LATENCY_BOUNDS_MS) + 1),
            "grounded_hist": [0] * GROUNDEDNESS_BUCKETS,
        }
        self.error_kinds: Counter[str] = Counter()

    @classmethod
    def of(cls, row: tuple[Any, ...]) -> "Tally":
        tally = cls()
        tally.add(row)
        return tally

    def add(self, row: tuple[Any, ...]) -> None:
        for name in SUMMED:
            self.sums[name] += row[_I[name]]
        for name in HISTOGRAMS:
            hist = self.hists[name]
            for index, count in enumerate(row[_I[name]]):
                hist[index] += count
        kinds = row[_I["error_kinds"]]
        if kinds:
            self.error_kinds.update(json.loads(kinds) if isinstance(kinds, str) else kinds)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["sums"][name]
        except KeyError:
            raise AttributeError(name) from None

    def latency(self, q: float) -> int | None:
        return percentile(self.hists["latency_hist"], q)

    def ttft(self, q: float) -> int | None:
        return percentile(self.hists["ttft_hist"], q)

    def summary(self) -> dict[str, Any]:
        s = self.sums
        rated = s["feedback_up"] + s["feedback_down"]
        return {
            "requests": s["requests"], "ok": s["ok"], "errors": s["errors"], "cancelled": s["cancelled"],
            "blocked": s["blocked"], "error_rate": _ratio(s["errors"], s["requests"]),
            "latency_p50_ms": self.latency(0.5), "latency_p95_ms": self.latency(0.95),
            "latency_mean_ms": round(s["latency_sum_ms"] / s["requests"]) if s["requests"] else None,
            "ttft_p50_ms": self.ttft(0.5), "ttft_p95_ms": self.ttft(0.95),
            "prompt_tokens": s["prompt_tokens"], "completion_tokens": s["completion_tokens"],
            "tokens": s["prompt_tokens"] + s["completion_tokens"],
            "cost_usd": f"{s['cost_usd']:f}", "cost_saved_usd": f"{s['cost_saved_usd']:f}",
            "cache_hits": s["cache_hits"], "cache_hit_rate": _ratio(s["cache_hits"], s["requests"]),
            "feedback_up": s["feedback_up"], "feedback_down": s["feedback_down"],
            "feedback_rate": _ratio(rated, s["ok"]), "thumbs_down_share": _ratio(s["feedback_down"], rated),
            "grounded_answers": s["grounded_count"],
            "groundedness_mean": round(s["grounded_sum"] / s["grounded_count"], 3) if s["grounded_count"] else None,
        }  # fmt: skip


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def percentile(hist: list[int], q: float) -> int | None:
    """The q-quantile of a latency histogram (LATENCY_BOUNDS_MS), interpolated linearly inside its bucket; the
    last bucket (above the last bound) reads as its lower bound."""
    total = sum(hist)
    if not total:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(hist):
        if count and seen + count >= rank:
            low = 0 if index == 0 else LATENCY_BOUNDS_MS[index - 1]
            if index >= len(LATENCY_BOUNDS_MS):
                return low
            return round(low + (LATENCY_BOUNDS_MS[index] - low) * max(0.0, rank - seen) / count)
        seen += count
    return LATENCY_BOUNDS_MS[-1]


def _steps(rng: Range) -> list[datetime]:
    size = HOUR if rng.step == "hour" else timedelta(days=1)
    first = rng.start if rng.step == "hour" else rng.start.replace(hour=0)
    steps, moment = [], first
    while moment < rng.end:
        steps.append(moment)
        moment += size
    return steps


def insights_get(*, org: Any, rng: Range, source: str = "rollups", now: datetime | None = None) -> dict[str, Any]:
    """Every figure of the dashboards for the range, as JSON-ready data (the page draws it, the API returns it)."""
    plan = read_plan(org=org, start=rng.start, end=rng.end, step=rng.step, source=source, now=now)
    figures = figures_read(org=org, plan=plan, step=rng.step)
    total = Tally.of(figures.total)
    by_step = {at: Tally.of(row) for at, row in figures.by_step.items()}
    by_pair = {pair: Tally.of(row) for pair, row in figures.by_pair.items()}
    series = []
    for step in _steps(rng):
        tally = by_step.get(step) or Tally()
        series.append({
            "start": step.isoformat(), "requests": tally.requests, "errors": tally.errors,
            "tokens": tally.prompt_tokens + tally.completion_tokens, "cost_usd": f"{tally.cost_usd:f}",
            "cache_hits": tally.cache_hits, "latency_p50_ms": tally.latency(0.5),
            "latency_p95_ms": tally.latency(0.95), "ttft_p50_ms": tally.ttft(0.5),
        })  # fmt: skip
    ordered = sorted(by_pair.items(), key=lambda item: (-item[1].requests, item[0]))
    pairs = [{"model": model, "feature": feature, **tally.summary()} for (model, feature), tally in ordered]
    kinds = [
        {"kind": kind, "count": count}
        for kind, count in sorted(total.error_kinds.items(), key=lambda kc: (-kc[1], kc[0]))
    ]
    if total.blocked:
        kinds.append({"kind": "blocked", "count": total.blocked})
    grounded = total.hists["grounded_hist"]
    return {
        **rng.as_json(),
        "totals": total.summary(),
        "series": series,
        "by_model_feature": [p for p in pairs if p["requests"] or p["feedback_up"] or p["feedback_down"]],
        "errors_by_kind": kinds,
        "groundedness": [
            {"from": index / 10, "to": min(1.0, (index + 1) / 10), "answers": count}
            for index, count in enumerate(grounded)
        ],
        "latency_buckets_ms": list(LATENCY_BOUNDS_MS),
        "rows_read": figures.rows_read,
    }  # fmt: skip


# --- Top failing questions ---------------------------------------------------------------------------------


def _question(call: LLMCall) -> str:
    """The asker's last message of a call, as stored (personal data masked); empty when purged or erased."""
    if not call.input_encrypted:
        return ""
    try:
        messages = json.loads(crypto.decrypt(call.input_encrypted))
    except (ValueError, TypeError):
        return ""
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user" and isinstance(message.get("content"), str):
            return " ".join(message["content"].split())[:300]
    return ""


def _key(question: str) -> str:
    return re.sub(r"[^\w ]+", "", question.lower()).strip()


def failing_questions(*, org: Any, rng: Range, limit: int = 8) -> list[dict[str, Any]]:
    """The questions (ask and chat) that failed most in the range: an error, a thumbs-down or an answer less than
    half supported by its citations. Read from the ledger, bounded: the latest FAILING_SCAN failures of each
    kind (a partial index holds exactly those), grouped by their text. The text stays in the ledger (masked,
    encrypted, purged by its retention): nothing is copied into the rollups."""
    window = Q(created_at__gte=rng.start, created_at__lt=rng.end)
    fields = ("id", "input_encrypted", "status", "groundedness", "created_at")
    failed = list(
        LLMCall.objects.for_org(org).filter(window, Q(status="error") | Q(groundedness__lt=0.5),
                                            feature__in=QUESTION_FEATURES)
        .order_by("-created_at").only(*fields)[:FAILING_SCAN]
    )  # fmt: skip
    downs = (
        Feedback.objects.for_org(org).filter(window, rating=Feedback.Rating.DOWN)
        .order_by("-created_at").values_list("llm_call_id", "message__llm_call_id")[:FAILING_SCAN]
    )  # fmt: skip
    down_ids = [call_id or message_call_id for call_id, message_call_id in downs if call_id or message_call_id]
    disliked = Counter(str(call_id) for call_id in down_ids)
    calls = {str(call.pk): call for call in failed}
    missing = [call_id for call_id in disliked if call_id not in calls]
    for call in LLMCall.objects.for_org(org).filter(pk__in=missing).only(*fields):
        calls[str(call.pk)] = call
    groups: dict[str, dict[str, Any]] = {}
    for call_id, call in calls.items():
        text = _question(call)
        if not text:
            continue
        group = groups.setdefault(_key(text), {"question": text, "failures": 0, "errors": 0, "thumbs_down": 0,
                                               "ungrounded": 0, "last_seen": call.created_at})  # fmt: skip
        errors = int(call.status == LLMCall.Status.ERROR)
        ungrounded = int(call.groundedness is not None and call.groundedness < 0.5)
        downs_here = disliked.get(call_id, 0)
        group["errors"] += errors
        group["ungrounded"] += ungrounded
        group["thumbs_down"] += downs_here
        group["failures"] += errors + ungrounded + downs_here
        group["last_seen"] = max(group["last_seen"], call.created_at)
    ranked = sorted(groups.values(), key=lambda group: (-group["failures"], -group["last_seen"].timestamp()))
    return [{**group, "last_seen": group["last_seen"].isoformat()} for group in ranked[:limit]]
