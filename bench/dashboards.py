"""The Insights dashboards on a big ledger: the page's queries from the rollups (days + hours) against the same
figures from hour rows only and from the raw ledger, side by side, for 24 hours, 7, 30 and 90 days.

Loads N synthetic LLMCall rows (default 10 million) and feedback on 2% of the answered ones into the real schema
of a throwaway database (its own data directory, .devdata/bench-dashboards unless --data-dir says otherwise;
a rerun with the same N reuses it), generated inside PostgreSQL (INSERT ... SELECT over generate_series, a
million rows per statement, the ledger's secondary indexes dropped during the load and rebuilt after). Rows
span 90 days and belong to 4 orgs holding 55%, 25%, 15% and 5% of them; every row carries an encrypted prompt
(one of 64 questions) as real rows do, so scans read a table as wide as production's.

Then it builds every rollup (the beat task's backfill: hour rows and day rows, timed), and times, for the largest
org, the page's work (`insights_get` and the charts):
- days+hours: as the page does it (whole days from day rows, the edges from hour rows, the open hour live);
- hours only: `source="hours"`, the same from hour rows (the design before the day level);
- raw: `source="ledger"`, the very same figures from the ledger alone (skipped with --page-only);
- raw, exact percentiles: p50/p95 latency per model and feature with percentile_cont (what a naive page does);
- failing: the top failing questions (bounded read of the latest failures through a partial index);
each repeated --repeat times, alternating, median and max reported, the figures of every source compared, and
CPU per page (this process and its PostgreSQL backend, from /proc) with the load average: wall times on a shared
machine mean little.

    python bench/dashboards.py [--rows 10000000] [--repeat 5] [--page-only] [--keep-rollups] [--data-dir DIR]
"""

import argparse
import json
import os
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from stack import BASE_DIR, bench_stack

ORG_SHARES = (0.55, 0.25, 0.15, 0.05)
DAYS = 90
MARKER = "bench-dashboards v1"
CHUNK = 1_000_000
QUESTIONS = [f"How long do refunds take for order type {n} in the {region} region?"
             for n in range(16) for region in ("EU", "US", "APAC", "LATAM")]  # fmt: skip


def load(rows: int) -> tuple[list, datetime]:
    from django.db import connection

    from accounts.models import Organization
    from saas.core import crypto

    with connection.cursor() as cursor:
        cursor.execute("SELECT obj_description('llm_llmcall'::regclass)")
        marker = cursor.fetchone()[0] or ""
    orgs = list(Organization.objects.filter(slug__startswith="bench-dash-").order_by("slug"))
    if marker == f"{MARKER} rows={rows}" and len(orgs) == len(ORG_SHARES):
        with connection.cursor() as cursor:
            cursor.execute("SELECT max(created_at) FROM llm_llmcall")
            now = cursor.fetchone()[0] + timedelta(seconds=1)
        print(f"Reusing the {rows:,} rows already loaded (ledger up to {now:%Y-%m-%d %H:%M} UTC).")
        ensure_indexes()
        return orgs, now
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE llm_llmcall, agents_feedback CASCADE")
    Organization.objects.filter(slug__startswith="bench-dash-").delete()
    orgs = [Organization.objects.create(name=f"Bench {i}", slug=f"bench-dash-{i}") for i in range(len(ORG_SHARES))]
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    prompts = [crypto.encrypt(json.dumps([{"role": "user", "content": q}])) for q in QUESTIONS]
    bounds = []  # cumulative shares: row r belongs to the first org whose bound exceeds random()
    acc = 0.0
    for share in ORG_SHARES:
        acc += share
        bounds.append(acc)
    org_case = "CASE " + " ".join(f"WHEN o < {b} THEN '{org.pk}'::uuid" for b, org in zip(bounds, orgs, strict=True))
    org_case += f" ELSE '{orgs[-1].pk}'::uuid END"
    drop_indexes()
    started = time.perf_counter()
    done = 0
    while done < rows:
        n = min(CHUNK, rows - done)
        sql = f"""
INSERT INTO llm_llmcall (id, created_at, updated_at, organization_id, request_id, trace_id, feature, model_requested,
  model_used, upstream, stream, attempts, fallbacks_taken, prompt_tokens, completion_tokens, tokens_estimated,
  cost_usd, cost_saved_usd, latency_ms, ttft_ms, cache, status, error_class, pii_masked, guardrails,
  input_encrypted, output_encrypted, groundedness)
SELECT gen_random_uuid(), at, at, {org_case}, '', '', feature, model, CASE WHEN status = 'error' AND f < 0.5 THEN ''
  ELSE model END, 'openai', feature IN ('chat', 'ask'), '[]'::jsonb, 0, ptok, ctok, false,
  CASE WHEN cache = 'miss' AND status = 'ok' THEN (ptok * 1.0 + ctok * 2.0) / 1e6 ELSE 0 END,
  CASE WHEN cache <> 'miss' THEN (ptok * 1.0 + ctok * 2.0) / 1e6 ELSE 0 END,
  latency, CASE WHEN feature IN ('chat', 'ask') AND status = 'ok' THEN (latency * (0.1 + 0.3 * f))::int END,
  cache, status, CASE WHEN status = 'error' THEN (ARRAY['timeout', 'rate_limited', 'upstream_error',
  'context_length'])[1 + floor(f * 4)::int] ELSE '' END, 0, '[]'::jsonb, (%(prompts)s::text[])[1 + floor(f * 64)::int],
  '', CASE WHEN feature = 'ask' AND status = 'ok' THEN CASE WHEN g < 0.7 THEN 1.0 ELSE round(((g - 0.7) / 0.3)::numeric, 3)::float END END
FROM (
  SELECT %(now)s::timestamptz - random() * interval '{DAYS} days' AS at, random() AS o, random() AS f, random() AS g,
    (ARRAY['ask', 'ask', 'chat', 'chat', 'chat', 'generate', 'embed', 'ask'])[1 + floor(random() * 8)::int] AS feature,
    (ARRAY['gpt-4o-mini', 'gpt-4o', 'claude-haiku', 'local'])[1 + floor(random() * 4)::int] AS model,
    CASE WHEN s < 0.95 THEN 'ok' WHEN s < 0.98 THEN 'error' WHEN s < 0.99 THEN 'cancelled' ELSE 'blocked' END AS status,
    CASE WHEN c < 0.10 THEN 'exact' WHEN c < 0.15 THEN 'semantic' ELSE 'miss' END AS cache,
    greatest(1, exp(6.4 + 0.8 * sqrt(-2 * ln(1 - u1)) * cos(2 * pi() * u2)))::int AS latency,
    (200 + random() * 3000)::int AS ptok, (20 + random() * 600)::int AS ctok
  FROM (SELECT random() AS s, random() AS c, random() AS u1, random() AS u2 FROM generate_series(1, %(n)s)) r
) x
"""  # noqa: S608
        with connection.cursor() as cursor:
            cursor.execute(sql, {"now": now, "n": n, "prompts": prompts})
        done += n
        print(f"  {done:,} rows in {time.perf_counter() - started:.0f} s", flush=True)
    load_s = time.perf_counter() - started
    ensure_indexes()
    with connection.cursor() as cursor:
        # Feedback on 2% of the answered asks and chats, a third of it thumbs-down, minutes after the answer.
        cursor.execute("""
INSERT INTO agents_feedback (id, created_at, updated_at, organization_id, llm_call_id, rating, comment_encrypted)
SELECT gen_random_uuid(), created_at + random() * interval '20 minutes', created_at, organization_id, id,
  CASE WHEN random() < 0.33 THEN -1 ELSE 1 END, ''
FROM llm_llmcall TABLESAMPLE BERNOULLI (2) WHERE status = 'ok' AND feature IN ('ask', 'chat')""")
        cursor.execute(f"COMMENT ON TABLE llm_llmcall IS '{MARKER} rows={rows}'")
        cursor.execute("VACUUM ANALYZE llm_llmcall")
        cursor.execute("VACUUM ANALYZE agents_feedback")
        cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('llm_llmcall'))")
        size = cursor.fetchone()[0]
    print(f"Loaded {rows:,} ledger rows in {load_s:.0f} s; table with "
          f"indexes: {size}")  # fmt: skip
    return orgs, now


def _existing_indexes() -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'llm_llmcall' "
                       "AND indexname <> 'llm_llmcall_pkey'")  # fmt: skip
        return [row[0] for row in cursor.fetchall()]


def drop_indexes() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for name in _existing_indexes():
            cursor.execute(f'DROP INDEX "{name}"')


def ensure_indexes() -> None:
    """The ledger's secondary indexes as its migrations make them (Django's own statements for the model):
    dropped for the load, built once after it (and rebuilt if a load was interrupted)."""
    from django.db import connection

    from saas.llm.models import LLMCall

    with connection.schema_editor() as editor:
        statements = [str(statement) for statement in editor._model_indexes_sql(LLMCall)]  # type: ignore[attr-defined]
    if len(_existing_indexes()) >= len(statements):
        return
    drop_indexes()
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
        cursor.execute("ANALYZE llm_llmcall")
    print(f"Built the ledger's {len(statements)} secondary indexes in {time.perf_counter() - started:.0f} s: "
          + ", ".join(_existing_indexes()))  # fmt: skip


def exact_percentiles(org, rng) -> list:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("""
SELECT COALESCE(NULLIF(model_used, ''), model_requested), feature,
       percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY latency_ms)
FROM llm_llmcall WHERE organization_id = %s AND created_at >= %s AND created_at < %s GROUP BY 1, 2""",
                       [str(org.pk), rng.start, rng.end])  # fmt: skip
        return cursor.fetchall()


def breakdown(org, rng, now, repeat: int) -> dict[str, float]:
    from analytics import insights
    from analytics.chart_context import insights_charts

    parts: dict[str, list[float]] = {"mark": [], "sql": [], "python": []}
    for _ in range(repeat):
        started = time.perf_counter()
        plan = insights.read_plan(org=org, start=rng.start, end=rng.end, step=rng.step, now=now)
        parts["mark"].append(time.perf_counter() - started)
        started = time.perf_counter()
        insights.figures_read(org=org, plan=plan, step=rng.step)
        parts["sql"].append(time.perf_counter() - started)
        started = time.perf_counter()
        insights_charts(insights.insights_get(org=org, rng=rng, now=now))
        whole = time.perf_counter() - started  # the page's work: the two reads above, then Python
        parts["python"].append(whole - parts["mark"][-1] - parts["sql"][-1])
    return {part: 1000 * statistics.median(values) for part, values in parts.items()}


def backend_cpu_s() -> float:
    """CPU seconds used so far by this connection's PostgreSQL backend (utime + stime from /proc)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_ms(fn, repeat: int) -> float:
    """CPU per call, this process and its PostgreSQL backend together: holds under load, unlike wall time."""
    fn()  # warm
    before, backend = time.process_time(), backend_cpu_s()
    for _ in range(repeat):
        fn()
    return 1000 * (time.process_time() - before + backend_cpu_s() - backend) / repeat


def timed(fn, repeat: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(1000 * (time.perf_counter() - started))
    return times, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--page-only", action="store_true", help="time the page alone (no raw-ledger side)")
    parser.add_argument("--keep-rollups", action="store_true", help="reuse the rollups of the last run")
    parser.add_argument("--data-dir", type=Path, default=BASE_DIR / ".devdata" / "bench-dashboards")
    args = parser.parse_args()
    with bench_stack(args.data_dir):
        from django.db import connection

        from analytics import insights, rollups
        from analytics.chart_context import insights_charts
        from analytics.models import DailyRollup, HourlyRollup

        orgs, now = load(args.rows)
        if not (args.keep_rollups and HourlyRollup.all_orgs.exists()):
            started = time.perf_counter()
            HourlyRollup.all_orgs.all().delete()
            DailyRollup.all_orgs.all().delete()
            rollups.RollupState.all_orgs.all().delete()
            done = rollups.rollup_hours(now=now)
            build_s = time.perf_counter() - started
            print(f"Rollups built (backfill of {DAYS} days, {len(done)} orgs): {sum(d.rows for d in done):,} hour "
                  f"rows and {sum(d.days for d in done):,} day rows in {build_s:.0f} s")  # fmt: skip
        started = time.perf_counter()
        rollups.rollup_hours(now=now)
        print(f"A beat run (last {rollups.RECOMPUTE_HOURS} closed hours and the open one, every org): "
              f"{1000 * (time.perf_counter() - started):.0f} ms")  # fmt: skip
        big = orgs[0]
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM llm_llmcall WHERE organization_id = %s", [str(big.pk)])
            print(f"Largest org: {cursor.fetchone()[0]:,} ledger rows; PostgreSQL "
                  f"{connection.cursor().connection.info.server_version}")  # fmt: skip
        today = now.date()
        ranges = [("24 hours", insights.range_parse(key="24h", now=now)),
                  ("7 days", insights.range_parse(key="7d", now=now)),
                  ("30 days", insights.range_parse(key="30d", now=now)),
                  ("90 days", insights.range_parse(start=(today - timedelta(days=89)).isoformat(),
                                                   end=today.isoformat(), now=now))]  # fmt: skip
        print(f"\nLoad average before the runs: {load_average()}")
        print(f"\n{'range':<9} {'ledger rows':>11} | {'page: days+hours':>16} {'rows':>5} {'CPU':>5} | "
              f"{'hours only':>13} {'rows':>6} {'CPU':>5} | {'raw ledger':>15} | {'exact p50/p95':>15} | "
              f"{'failing q.':>11}")  # fmt: skip
        print(f"{'':<9} {'':>11} | {'median/max ms':>16} {'read':>5} {'ms':>5} | {'median/max ms':>13} "
              f"{'read':>6} {'ms':>5} | {'median/max ms':>15} | {'median/max ms':>15} | {'median/max':>11}")  # fmt: skip
        breakdowns = []
        for name, rng in ranges:
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM llm_llmcall WHERE organization_id = %s AND created_at >= %s "
                               "AND created_at < %s", [str(big.pk), rng.start, rng.end])  # fmt: skip
                in_range = cursor.fetchone()[0]
            page, hours, raw, exact, failing = [], [], [], [], []
            results: dict[str, Any] = {}

            def page_work(rng=rng, source="rollups"):
                data = insights.insights_get(org=big, rng=rng, now=now, source=source)
                insights_charts(data)
                return data

            for _ in range(args.repeat):  # alternating, so that no side always finds a warmer cache
                t, results["rollups"] = timed(page_work, 1)
                page += t
                t, results["hours"] = timed(lambda rng=rng: page_work(rng, "hours"), 1)
                hours += t
                if not args.page_only:
                    t, results["ledger"] = timed(lambda rng=rng: page_work(rng, "ledger"), 1)
                    raw += t
                    t, _ = timed(lambda rng=rng: exact_percentiles(big, rng), 1)
                    exact += t
                t, _ = timed(lambda rng=rng: insights.failing_questions(org=big, rng=rng), 1)
                failing += t
            read = {source: data.pop("rows_read") for source, data in results.items()}
            same = all(data == results["rollups"] for data in results.values())
            page_cpu = cpu_ms(page_work, args.repeat)
            hours_cpu = cpu_ms(lambda rng=rng: page_work(rng, "hours"), args.repeat)

            def fmt(values):
                return f"{statistics.median(values):,.0f} / {max(values):,.0f}" if values else "-"

            print(f"{name:<9} {in_range:>11,} | {fmt(page):>16} {read['rollups']:>5,} {page_cpu:>5.0f} | "
                  f"{fmt(hours):>13} {read['hours']:>6,} {hours_cpu:>5.0f} | {fmt(raw):>15} | {fmt(exact):>15} | "
                  f"{fmt(failing):>11}   {'same figures' if same else 'FIGURES DIFFER'}", flush=True)  # fmt: skip
            breakdowns.append((name, breakdown(big, rng, now, args.repeat)))
        print(f"Load average after the runs: {load_average()}")
        print("\nWhere the page's time goes (median ms): the org's mark, the one statement that adds up days, hours "
              "and the open hour in PostgreSQL, then Python (figures and charts)")  # fmt: skip
        for name, parts in breakdowns:
            print(f"{name:<9} " + ", ".join(f"{part} {ms:,.1f}" for part, ms in parts.items()))


def load_average() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg()) + f" ({os.cpu_count()} CPUs)"


if __name__ == "__main__":
    main()
