"""What the dashboards show an org's admins over a range (the Insights page and GET /api/v1/insights): requests,
errors by kind, latency and time to first token (p50/p95) per model and feature, tokens and cost, cache hits and
money saved, feedback, groundedness, and the questions that fail most.

Read from the hourly rollups (analytics/rollups.py) for the hours already rolled up, and from the ledger with
the same statement for the hours after (the open hour, or more when the beat task fell behind): a 30-day page
reads a few thousand small rows at most, and the last minutes are on it. Percentiles come from the rollups'
fixed latency buckets (analytics.models.LATENCY_BOUNDS_MS), interpolated inside a bucket.
"""

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from agents.models import Feedback
from analytics.models import GROUNDEDNESS_BUCKETS, LATENCY_BOUNDS_MS, HourlyRollup, RollupState
from analytics.rollups import COLUMNS, HOUR, aggregate, hour_floor
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


def rollup_rows(*, org: Any, start: datetime, end: datetime, step: str = "hour", source: str = "rollups",
                now: datetime | None = None) -> tuple[list[tuple[Any, ...]], Counter[str]]:  # fmt: skip
    """Rows in COLUMNS order for the hours of [start, end), and the failed calls per error kind of the stored part:
    the stored rollups up to the org's mark (never past the open hour), added up by PostgreSQL per `step` (hour
    or day), feature and model; then the ledger itself, per hour (with its error kinds), after the mark.
    `source="ledger"` reads everything from the ledger (the benchmark's and the tests' reference)."""
    now = now or timezone.now()
    live_from = start
    if source == "rollups":
        state = RollupState.objects.for_org(org).first()
        mark = min(state.rolled_until, hour_floor(now)) if state else start
        live_from = min(max(start, mark), end)
    stored, kinds = stored_rows(org=org, start=start, end=live_from, step=step)
    return stored + aggregate(org_id=org.pk, start=live_from, end=end), kinds


def _summed(column: str, size: int) -> str:
    """A histogram column added up element by element: ARRAY[sum(h[1]), sum(h[2]), ...], native sums only."""
    return "ARRAY[" + ", ".join(f"sum({column}[{i}])::bigint" for i in range(1, size + 1)) + "]"


def _stored_sql() -> str:
    table = HourlyRollup._meta.db_table
    latency = len(LATENCY_BOUNDS_MS) + 1
    ints = ("requests", "ok", "errors", "cancelled", "blocked")
    after = ("prompt_tokens", "completion_tokens")
    return f"""
SELECT date_trunc(%(step)s, hour, 'UTC') AS at, feature, model,
       {", ".join(f"sum({name})::bigint" for name in ints)}, '{{}}'::jsonb,
       sum(cache_hits)::bigint, {", ".join(f"sum({name})::bigint" for name in after)},
       sum(cost_usd), sum(cost_saved_usd), sum(latency_sum_ms)::bigint,
       {_summed("latency_hist", latency)}, sum(ttft_count)::bigint, sum(ttft_sum_ms)::bigint,
       {_summed("ttft_hist", latency)}, sum(grounded_count)::bigint, sum(grounded_sum),
       {_summed("grounded_hist", GROUNDEDNESS_BUCKETS)}, sum(feedback_up)::bigint, sum(feedback_down)::bigint
FROM {table} WHERE organization_id = %(org)s AND hour >= %(start)s AND hour < %(end)s
GROUP BY 1, 2, 3
"""  # noqa: S608


STORED_SQL = _stored_sql()
# Error kinds are shown for the whole range only: added up once, not per step, feature and model.
KINDS_SQL = f"""
SELECT e.key, sum(e.value::int)::bigint FROM {HourlyRollup._meta.db_table} r, jsonb_each_text(r.error_kinds) e
WHERE organization_id = %(org)s AND hour >= %(start)s AND hour < %(end)s AND errors > 0 GROUP BY 1
"""  # noqa: S608


def stored_rows(*, org: Any, start: datetime, end: datetime, step: str) -> tuple[list[tuple[Any, ...]], Counter[str]]:
    """The stored rollups of [start, end) added up per step, feature and model (COLUMNS order, error kinds
    empty), and their failed calls per error kind."""
    if start >= end:
        return [], Counter()
    params: dict[str, Any] = {"org": str(org.pk), "start": start, "end": end, "step": step}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL work_mem = '64MB'")  # a month of rows sorts in memory, not on disk
        cursor.execute(STORED_SQL, params)
        rows = cursor.fetchall()
        cursor.execute(KINDS_SQL, params)
        kinds = Counter({kind: int(count) for kind, count in cursor.fetchall()})
    return rows, kinds


# --- Adding rows up ----------------------------------------------------------------------------------------

_I = {name: index for index, name in enumerate(COLUMNS)}
SUMMED = ("requests", "ok", "errors", "cancelled", "blocked", "cache_hits", "prompt_tokens", "completion_tokens",
          "cost_usd", "cost_saved_usd", "latency_sum_ms", "ttft_count", "ttft_sum_ms", "grounded_count",
          "grounded_sum", "feedback_up", "feedback_down")  # fmt: skip
HISTOGRAMS = ("latency_hist", "ttft_hist", "grounded_hist")


class Tally:
    """Sums and histograms of any set of rollup rows."""

    def __init__(self) -> None:
        self.sums: dict[str, Any] = dict.fromkeys(SUMMED, 0)
        self.sums["cost_usd"] = self.sums["cost_saved_usd"] = Decimal(0)
        self.hists = {
            "latency_hist": [0] * (len(LATENCY_BOUNDS_MS) + 1),
            "ttft_hist": [0] * (len(LATENCY_BOUNDS_MS) + 1),
            "grounded_hist": [0] * GROUNDEDNESS_BUCKETS,
        }
        self.error_kinds: Counter[str] = Counter()

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
    rows, stored_kinds = rollup_rows(org=org, start=rng.start, end=rng.end, step=rng.step, source=source, now=now)
    total = Tally()
    total.error_kinds.update(stored_kinds)
    by_step: dict[datetime, Tally] = defaultdict(Tally)
    by_pair: dict[tuple[str, str], Tally] = defaultdict(Tally)
    hour_at, model_at, feature_at = _I["hour"], _I["model"], _I["feature"]
    for row in rows:
        total.add(row)
        hour = row[hour_at]
        by_step[hour if rng.step == "hour" else hour.replace(hour=0)].add(row)
        by_pair[(row[model_at], row[feature_at])].add(row)
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
        "rows_read": len(rows),
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
