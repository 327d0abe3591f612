"""The ledger rolled up per org, UTC hour, feature and model (analytics.models.HourlyRollup), and whole days
folded into one row per day, feature and model (analytics.models.DailyRollup: the sum of that day's hours).

One SQL statement (`aggregate_sql`) turns a window of an org's ledger and feedback into rollup rows. The beat
task (`analytics.rollup_hours`) stores what it returns for the last closed hours and the open one; the
dashboard (analytics/insights.py) runs the very same statement, without storing, over the hours not rolled up
yet. So a stored row and a live one can never disagree on what a number means.

Idempotent: a run replaces the rows of the hours it covers (an hour that lost its rows loses its rollup too),
then refolds every whole day (all its hours before the org's mark) that those hours touch, under a per-org
advisory lock, in one transaction, so two runs at once do not collide, a rerun changes nothing, and a day row is
always the sum of its hour rows (late rows and re-rolls of old hours included).
"""

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Min
from django.utils import timezone

from agents.models import Feedback, Message
from analytics.models import GROUNDEDNESS_BUCKETS, LATENCY_BOUNDS_MS, DailyRollup, HourlyRollup, RollupState
from saas.core.tenancy import org_scope
from saas.llm.models import LLMCall

logger = logging.getLogger(__name__)

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
RECOMPUTE_HOURS = 3  # closed hours recomputed on every run: ledger rows written late (the stream) and feedback
CHUNK = timedelta(days=7)  # a backfill goes a week per statement
COLUMNS = ("hour", "feature", "model", "requests", "ok", "errors", "cancelled", "blocked", "error_kinds",
           "cache_hits", "prompt_tokens", "completion_tokens", "cost_usd", "cost_saved_usd", "latency_sum_ms",
           "latency_hist", "ttft_count", "ttft_sum_ms", "ttft_hist", "grounded_count", "grounded_sum",
           "grounded_hist", "feedback_up", "feedback_down")  # fmt: skip


def hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def day_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def day_ceil(moment: datetime) -> datetime:
    floor = day_floor(moment)
    return floor if floor == moment else floor + DAY


def _histogram(column: str, buckets: int) -> str:
    """ARRAY[count of rows in bucket 0, 1, ...] of a bucket number computed once per row (width_bucket)."""
    return "ARRAY[" + ", ".join(f"count(*) FILTER (WHERE {column} = {i})::int" for i in range(buckets)) + "]"


# An upper bound b (inclusive, whole ms) is the lower bound b + 1 of the next bucket.
_LATENCY_LOWER = [str(bound + 1) for bound in LATENCY_BOUNDS_MS]
_GROUNDED_LOWER = [f"{tenth / 10:.1f}" for tenth in range(1, 11)]  # [0,.1) ... [.9,1) then 1.0


def _sql() -> str:
    calls, feedback, messages = LLMCall._meta.db_table, Feedback._meta.db_table, Message._meta.db_table
    buckets = len(LATENCY_BOUNDS_MS) + 1
    zeros = lambda n: "ARRAY[" + ", ".join(["0"] * n) + "]::int[]"  # noqa: E731
    # Table names and bucket bounds come from code; every value is a query parameter.
    return f"""
WITH c AS (
  SELECT date_trunc('hour', created_at, 'UTC') AS hour, feature,
         COALESCE(NULLIF(model_used, ''), model_requested) AS model,
         count(*)::int AS requests,
         count(*) FILTER (WHERE status = 'ok')::int AS ok,
         count(*) FILTER (WHERE status = 'error')::int AS errors,
         count(*) FILTER (WHERE status = 'cancelled')::int AS cancelled,
         count(*) FILTER (WHERE status = 'blocked')::int AS blocked,
         count(*) FILTER (WHERE cache IN ('exact', 'semantic'))::int AS cache_hits,
         sum(prompt_tokens)::bigint AS prompt_tokens, sum(completion_tokens)::bigint AS completion_tokens,
         sum(cost_usd) AS cost_usd, sum(cost_saved_usd) AS cost_saved_usd,
         sum(latency_ms)::bigint AS latency_sum_ms,
         {_histogram("lb", buckets)} AS latency_hist,
         count(ttft_ms)::int AS ttft_count, COALESCE(sum(ttft_ms), 0)::bigint AS ttft_sum_ms,
         {_histogram("tb", buckets)} AS ttft_hist,
         count(groundedness)::int AS grounded_count, COALESCE(sum(groundedness), 0)::float AS grounded_sum,
         {_histogram("gb", GROUNDEDNESS_BUCKETS)} AS grounded_hist
  FROM (
    SELECT *, width_bucket(latency_ms, ARRAY[{", ".join(_LATENCY_LOWER)}]) AS lb,
           width_bucket(ttft_ms, ARRAY[{", ".join(_LATENCY_LOWER)}]) AS tb,
           width_bucket(groundedness, ARRAY[{", ".join(_GROUNDED_LOWER)}]) AS gb
    FROM {calls}
    WHERE organization_id = %(org)s AND created_at >= %(start)s AND created_at < %(end)s
  ) call
  GROUP BY 1, 2, 3
), e AS (
  SELECT hour, feature, model, jsonb_object_agg(kind, n) AS error_kinds FROM (
    SELECT date_trunc('hour', created_at, 'UTC') AS hour, feature,
           COALESCE(NULLIF(model_used, ''), model_requested) AS model,
           COALESCE(NULLIF(error_class, ''), 'unknown') AS kind, count(*)::int AS n
    FROM {calls}
    WHERE organization_id = %(org)s AND created_at >= %(start)s AND created_at < %(end)s AND status = 'error'
    GROUP BY 1, 2, 3, 4
  ) kinds GROUP BY 1, 2, 3
), f AS (
  SELECT date_trunc('hour', fb.created_at, 'UTC') AS hour, COALESCE(call.feature, 'chat') AS feature,
         COALESCE(NULLIF(call.model_used, ''), call.model_requested, NULLIF(m.model, ''), 'unknown') AS model,
         count(*) FILTER (WHERE fb.rating = 1)::int AS feedback_up,
         count(*) FILTER (WHERE fb.rating = -1)::int AS feedback_down
  FROM {feedback} fb
  LEFT JOIN {messages} m ON m.id = fb.message_id
  LEFT JOIN {calls} call ON call.id = COALESCE(fb.llm_call_id, m.llm_call_id)
  WHERE fb.organization_id = %(org)s AND fb.created_at >= %(start)s AND fb.created_at < %(end)s
  GROUP BY 1, 2, 3
)
SELECT hour, feature, model,
       COALESCE(requests, 0) AS requests, COALESCE(ok, 0) AS ok, COALESCE(errors, 0) AS errors,
       COALESCE(cancelled, 0) AS cancelled, COALESCE(blocked, 0) AS blocked,
       COALESCE(error_kinds, '{{}}'::jsonb) AS error_kinds, COALESCE(cache_hits, 0) AS cache_hits,
       COALESCE(prompt_tokens, 0) AS prompt_tokens, COALESCE(completion_tokens, 0) AS completion_tokens,
       COALESCE(cost_usd, 0)::numeric(18, 8) AS cost_usd,  -- the rollups' scale, also on a feedback-only row
       COALESCE(cost_saved_usd, 0)::numeric(18, 8) AS cost_saved_usd,
       COALESCE(latency_sum_ms, 0) AS latency_sum_ms, COALESCE(latency_hist, {zeros(buckets)}) AS latency_hist,
       COALESCE(ttft_count, 0) AS ttft_count, COALESCE(ttft_sum_ms, 0) AS ttft_sum_ms,
       COALESCE(ttft_hist, {zeros(buckets)}) AS ttft_hist, COALESCE(grounded_count, 0) AS grounded_count,
       COALESCE(grounded_sum, 0) AS grounded_sum,
       COALESCE(grounded_hist, {zeros(GROUNDEDNESS_BUCKETS)}) AS grounded_hist,
       COALESCE(feedback_up, 0) AS feedback_up, COALESCE(feedback_down, 0) AS feedback_down
FROM c FULL JOIN f USING (hour, feature, model) LEFT JOIN e USING (hour, feature, model)
ORDER BY hour, feature, model
"""  # noqa: S608


AGGREGATE_SQL = _sql()
INSERT_SQL = f"""
INSERT INTO {HourlyRollup._meta.db_table} (id, created_at, updated_at, organization_id, {", ".join(COLUMNS)})
SELECT gen_random_uuid(), now(), now(), %(org)s, rows.* FROM ({AGGREGATE_SQL}) rows
"""  # noqa: S608


def summed(column: str, size: int, cast: str = "bigint") -> str:
    """A histogram column added up element by element: ARRAY[sum(h[1]), sum(h[2]), ...] (native sums only)."""
    return "ARRAY[" + ", ".join(f"COALESCE(sum({column}[{i}]), 0)::{cast}" for i in range(1, size + 1)) + "]"


def _fold_sql() -> str:
    """DailyRollup rows of [start, end) (whole days) as the sums of their HourlyRollup rows."""
    hourly, daily = HourlyRollup._meta.db_table, DailyRollup._meta.db_table
    latency = len(LATENCY_BOUNDS_MS) + 1
    ints = ("requests", "ok", "errors", "cancelled", "blocked", "cache_hits", "ttft_count", "grounded_count",
            "feedback_up", "feedback_down")  # fmt: skip
    bigs = ("prompt_tokens", "completion_tokens", "latency_sum_ms", "ttft_sum_ms")
    return f"""
INSERT INTO {daily} (id, created_at, updated_at, organization_id, day, feature, model, error_kinds,
  {", ".join(ints)}, {", ".join(bigs)}, cost_usd, cost_saved_usd, grounded_sum, latency_hist, ttft_hist, grounded_hist)
SELECT gen_random_uuid(), now(), now(), %(org)s, h.day, h.feature, h.model, COALESCE(k.kinds, '{{}}'::jsonb),
       {", ".join(f"h.{name}" for name in ints + bigs)}, h.cost_usd, h.cost_saved_usd, h.grounded_sum,
       h.latency_hist, h.ttft_hist, h.grounded_hist
FROM (
  SELECT date_trunc('day', hour, 'UTC') AS day, feature, model,
         {", ".join(f"sum({name})::int AS {name}" for name in ints)},
         {", ".join(f"sum({name})::bigint AS {name}" for name in bigs)},
         sum(cost_usd) AS cost_usd, sum(cost_saved_usd) AS cost_saved_usd, sum(grounded_sum) AS grounded_sum,
         {summed("latency_hist", latency, "int")} AS latency_hist, {summed("ttft_hist", latency, "int")} AS ttft_hist,
         {summed("grounded_hist", GROUNDEDNESS_BUCKETS, "int")} AS grounded_hist
  FROM {hourly} WHERE organization_id = %(org)s AND hour >= %(start)s AND hour < %(end)s
  GROUP BY 1, 2, 3
) h LEFT JOIN (
  SELECT day, feature, model, jsonb_object_agg(kind, n) AS kinds FROM (
    SELECT date_trunc('day', r.hour, 'UTC') AS day, r.feature, r.model, e.key AS kind, sum(e.value::int)::int AS n
    FROM {hourly} r, jsonb_each_text(r.error_kinds) e
    WHERE r.organization_id = %(org)s AND r.hour >= %(start)s AND r.hour < %(end)s AND r.errors > 0
    GROUP BY 1, 2, 3, 4
  ) per_kind GROUP BY 1, 2, 3
) k USING (day, feature, model)
"""  # noqa: S608


FOLD_SQL = _fold_sql()
FOLD_CHUNK = timedelta(days=31)  # days folded per statement


def fold_days(*, org_id: Any, start: datetime, end: datetime) -> int:
    """Replace the org's DailyRollup rows of the whole UTC days in [start, end) with the sums of their hour rows.
    Call it inside rollup_org's transaction (its advisory lock held), for days whose hours are all rolled up."""
    written = 0
    cursor_start = day_floor(start)
    while cursor_start < end:
        cursor_end = min(end, cursor_start + FOLD_CHUNK)
        DailyRollup.objects.filter(day__gte=cursor_start, day__lt=cursor_end).delete()
        with connection.cursor() as cursor:
            cursor.execute(FOLD_SQL, {"org": str(org_id), "start": cursor_start, "end": cursor_end})
            written += cursor.rowcount
        cursor_start = cursor_end
    return written


def aggregate(*, org_id: Any, start: datetime, end: datetime) -> list[tuple[Any, ...]]:
    """The rollup rows (tuples in COLUMNS order) of an org's ledger and feedback in [start, end), from the
    tables themselves."""
    if start >= end:
        return []
    with connection.cursor() as cursor:
        cursor.execute(AGGREGATE_SQL, {"org": str(org_id), "start": start, "end": end})
        rows = cursor.fetchall()
    kinds = COLUMNS.index("error_kinds")  # Django has psycopg read jsonb as text (its JSONField decodes it)
    return [(*row[:kinds], json_value(row[kinds]), *row[kinds + 1 :]) for row in rows]


def json_value(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class Rolled:
    org_id: Any
    start: datetime
    end: datetime
    rows: int  # hour rows written
    days: int = 0  # day rows written (whole days refolded)


def rollup_org(*, org_id: Any, start: datetime, end: datetime, now: datetime | None = None) -> Rolled:
    """Replace the org's rollups of the hours in [start, end) (whole hours) with the ledger's aggregates, and move
    the org's mark to the end of the closed hours covered, if that is further on (only ever forward). The open
    hour is stored too but stays behind the mark: the dashboard reads it live. Then refold the whole days
    (before the mark's day) that these hours touch, and any day not folded yet, from their hour rows."""
    start, end = hour_floor(start), hour_floor(end - timedelta(microseconds=1)) + HOUR
    mark = min(end, hour_floor(now or timezone.now()))
    written = 0
    with org_scope(org_id), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"analytics.rollup:{org_id}"])
        cursor_start = start
        while cursor_start < end:
            cursor_end = min(end, cursor_start + CHUNK)
            HourlyRollup.objects.filter(hour__gte=cursor_start, hour__lt=cursor_end).delete()
            with connection.cursor() as cursor:  # in the database: the rows never travel to Python and back
                cursor.execute(INSERT_SQL, {"org": str(org_id), "start": cursor_start, "end": cursor_end})
                written += cursor.rowcount
            cursor_start = cursor_end
        state = RollupState.objects.select_for_update().first()
        if state is None:
            state = RollupState.objects.create(organization_id=org_id, rolled_until=mark)
        elif state.rolled_until < mark:
            state.rolled_until = mark
            state.save(update_fields=["rolled_until", "updated_at"])
        # The whole days before the mark's day that these hours touch (and any not folded yet) are refolded.
        days_until = day_floor(state.rolled_until)
        if state.days_until is None:  # never folded (a new team, or rollups older than the day level): all of it
            first = HourlyRollup.objects.aggregate(first=Min("hour"))["first"]
            fold_from, fold_to = (day_floor(first) if first else days_until), days_until
        else:
            fold_from, fold_to = min(day_floor(start), state.days_until), min(days_until, day_ceil(end))
        days = fold_days(org_id=org_id, start=fold_from, end=fold_to) if fold_from < fold_to else 0
        if state.days_until is None or state.days_until < days_until:
            state.days_until = days_until
            state.save(update_fields=["days_until", "updated_at"])
    return Rolled(org_id, start, end, written, days)


def _first_activity(org_id: Any) -> datetime | None:
    first_call = LLMCall.objects.for_org(org_id).aggregate(first=Min("created_at"))["first"]
    first_feedback = Feedback.objects.for_org(org_id).aggregate(first=Min("created_at"))["first"]
    return min((moment for moment in (first_call, first_feedback) if moment), default=None)


def orgs_to_roll(*, now: datetime, hours: int) -> list[Any]:
    """The orgs with ledger rows or feedback in the recomputed window, and those never rolled up that have any
    (a team with none gets its mark now, so that it is not asked again on every run)."""
    from accounts.models import Organization

    since = hour_floor(now) - hours * HOUR
    recent = set(LLMCall.all_orgs.filter(created_at__gte=since).values_list("organization_id", flat=True).distinct())
    recent |= set(Feedback.all_orgs.filter(created_at__gte=since).values_list("organization_id", flat=True).distinct())
    never = Organization.objects.exclude(pk__in=RollupState.all_orgs.values("organization_id"))
    for org_id in never.values_list("pk", flat=True):
        if org_id in recent:
            continue
        if LLMCall.objects.for_org(org_id).exists() or Feedback.objects.for_org(org_id).exists():
            recent.add(org_id)
        else:
            RollupState.all_orgs.get_or_create(organization_id=org_id, defaults={"rolled_until": hour_floor(now)})
    return sorted(recent, key=str)


def rollup_hours(*, org_ids: list[Any] | None = None, hours: int = RECOMPUTE_HOURS,
                 now: datetime | None = None) -> list[Rolled]:  # fmt: skip
    """The beat task's work: for each org (the given ones, or every org with recent activity), the last `hours`
    closed hours and the open one; from the org's mark on if the beat fell further behind; from its first call
    if it was never rolled up."""
    now = now or timezone.now()
    end = hour_floor(now) + HOUR  # the open hour included: the dashboard still reads it live
    done = []
    for org_id in org_ids if org_ids is not None else orgs_to_roll(now=now, hours=hours):
        start = hour_floor(now) - hours * HOUR
        with org_scope(org_id):
            state = RollupState.objects.first()
            if state is None:
                first = _first_activity(org_id)
                start = min(start, hour_floor(first)) if first else start
            else:
                start = min(start, state.rolled_until - HOUR)
        done.append(rollup_org(org_id=org_id, start=start, end=end, now=now))
    if done:
        logger.info("Rolled up %d orgs, %d hour rows, %d day rows", len(done), sum(item.rows for item in done),
                    sum(item.days for item in done))  # fmt: skip
    return done
