"""The ledger rolled up per org, UTC hour, feature and model (analytics.models.HourlyRollup).

One SQL statement (`aggregate_sql`) turns a window of an org's ledger and feedback into rollup rows. The beat
task (`analytics.rollup_hours`) stores what it returns for the last closed hours and the open one; the
dashboard (analytics/insights.py) runs the very same statement, without storing, over the hours not rolled up
yet. So a stored row and a live one can never disagree on what a number means.

Idempotent: a run replaces the rows of the hours it covers (an hour that lost its rows loses its rollup too),
under a per-org advisory lock, so two runs at once do not collide and a rerun changes nothing.
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
from analytics.models import GROUNDEDNESS_BUCKETS, LATENCY_BOUNDS_MS, HourlyRollup, RollupState
from saas.core.tenancy import org_scope
from saas.llm.models import LLMCall

logger = logging.getLogger(__name__)

HOUR = timedelta(hours=1)
RECOMPUTE_HOURS = 3  # closed hours recomputed on every run: ledger rows written late (the stream) and feedback
CHUNK = timedelta(days=7)  # a backfill goes a week per statement
COLUMNS = ("hour", "feature", "model", "requests", "ok", "errors", "cancelled", "blocked", "error_kinds",
           "cache_hits", "prompt_tokens", "completion_tokens", "cost_usd", "cost_saved_usd", "latency_sum_ms",
           "latency_hist", "ttft_count", "ttft_sum_ms", "ttft_hist", "grounded_count", "grounded_sum",
           "grounded_hist", "feedback_up", "feedback_down")  # fmt: skip


def hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


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
       COALESCE(requests, 0), COALESCE(ok, 0), COALESCE(errors, 0), COALESCE(cancelled, 0), COALESCE(blocked, 0),
       COALESCE(error_kinds, '{{}}'::jsonb), COALESCE(cache_hits, 0),
       COALESCE(prompt_tokens, 0), COALESCE(completion_tokens, 0), COALESCE(cost_usd, 0), COALESCE(cost_saved_usd, 0),
       COALESCE(latency_sum_ms, 0), COALESCE(latency_hist, {zeros(buckets)}),
       COALESCE(ttft_count, 0), COALESCE(ttft_sum_ms, 0), COALESCE(ttft_hist, {zeros(buckets)}),
       COALESCE(grounded_count, 0), COALESCE(grounded_sum, 0), COALESCE(grounded_hist, {zeros(GROUNDEDNESS_BUCKETS)}),
       COALESCE(feedback_up, 0), COALESCE(feedback_down, 0)
FROM c FULL JOIN f USING (hour, feature, model) LEFT JOIN e USING (hour, feature, model)
ORDER BY hour, feature, model
"""  # noqa: S608


AGGREGATE_SQL = _sql()
INSERT_SQL = f"""
INSERT INTO {HourlyRollup._meta.db_table} (id, created_at, updated_at, organization_id, {", ".join(COLUMNS)})
SELECT gen_random_uuid(), now(), now(), %(org)s, rows.* FROM ({AGGREGATE_SQL}) rows
"""  # noqa: S608


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
    rows: int


def rollup_org(*, org_id: Any, start: datetime, end: datetime, now: datetime | None = None) -> Rolled:
    """Replace the org's rollups of the hours in [start, end) (whole hours) with the ledger's aggregates, and move
    the org's mark to the end of the closed hours covered, if that is further on (only ever forward). The open
    hour is stored too but stays behind the mark: the dashboard reads it live."""
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
            RollupState.objects.create(organization_id=org_id, rolled_until=mark)
        elif state.rolled_until < mark:
            state.rolled_until = mark
            state.save(update_fields=["rolled_until", "updated_at"])
    return Rolled(org_id, start, end, written)


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
        logger.info("Rolled up %d orgs, %d rows", len(done), sum(item.rows for item in done))
    return done
