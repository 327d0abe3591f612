"""The ledger: one LLMCall row per gateway call, and with it (same transaction) the call's usage row.

A call builds its row in memory (`Entry`, with the id it had from the start) and hands it here once, when it
ends. The row reaches PostgreSQL by one of two paths, and every insert is idempotent (ON CONFLICT DO NOTHING on
the call's id, and on the usage row's one-to-one link to it), so a row delivered twice is written once and
charged once:

- at once (`direct`): the browser, ask and crews, which read the row right after the call;
- through a Redis stream (`batched`, LLM_LEDGER["batched"]): the API's hot paths (/v1, generate) XADD the row
  and the `llm.drain_ledger` task writes the stream in batches (one transaction per batch). A writer that dies
  mid-batch leaves its entries unacknowledged; the next writer claims them after LLM_LEDGER["claim_seconds"].

Each path falls back on the other: a stream that Redis cannot take is written at once, and a row that the
database refuses goes to the stream (the writer inserts it once the database is back). When both stores are
down the call ends with LedgerUnavailable (503): no answer leaves without its row.

An API call's trace (saas/llm/tracing.py, `ends_with_call`) travels in its entry and is written in the same
transaction, in a savepoint of its own: a trace the database refuses is logged and dropped, never the row.

Readers that need a batched row right away (feedback on a response id) call `drain()` on a miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from redis.exceptions import NoScriptError

from billing import quota
from saas.core import on_loop
from saas.core.redis import get_async_redis, get_redis
from saas.llm import metrics
from saas.llm.models import LLMCall, ModelConfig
from saas.llm.providers import LLMError, Usage

logger = logging.getLogger(__name__)
STREAM = "crewdesk:llm:ledger"
DEAD = "crewdesk:llm:ledger:dead"  # entries the database refused one by one (kept for an operator)
GROUP = "writers"


class LedgerUnavailable(LLMError):
    """Neither PostgreSQL nor Redis took the call's ledger row: the answer is withheld, nothing is charged."""

    kind, retryable, http_status = "service_unavailable", False, 503


def cost(model: ModelConfig | None, usage: Usage) -> Decimal:
    if model is None:
        return Decimal(0)
    million = Decimal(1_000_000)
    return (
        Decimal(usage.prompt_tokens) * model.input_price_per_mtok / million
        + Decimal(usage.completion_tokens) * model.output_price_per_mtok / million
    )


@dataclass(frozen=True)
class Entry:
    """A call's ledger row and its usage row (None: not billed), as JSON-ready dicts keyed by column; `trace`:
    the trace that ended with the call (an API call's, saas/llm/tracing.py `rows`), {"trace": row, "spans": rows}."""

    call: dict[str, Any]
    usage: dict[str, Any] | None = None
    trace: dict[str, Any] | None = None

    @property
    def call_id(self) -> str:
        return str(self.call["id"])

    def encode(self) -> str:
        return orjson.dumps(
            {"call": self.call, "usage": self.usage, "trace": self.trace}, default=str, option=orjson.OPT_NON_STR_KEYS
        ).decode()

    @classmethod
    def decode(cls, raw: str | bytes) -> Entry:
        data = orjson.loads(raw)
        return cls(data["call"], data.get("usage"), data.get("trace"))


def usage_row(*, call: dict[str, Any], kind: str, period_start: Any) -> dict[str, Any]:
    """The usage ledger's row for a call (billing.UsageEvent): its id follows from the call's."""
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"usage:{call['id']}")),
        "organization_id": call["organization_id"],
        "llm_call_id": call["id"],
        "kind": kind,
        "feature": call["feature"],
        "model": call["model_used"],
        "cost_usd": call["cost_usd"],
        "period_start": period_start,
        "created_at": call["created_at"],
        "updated_at": call["created_at"],
    }


# --- Handing a row over --------------------------------------------------------------------------------------


def submit(entry: Entry, *, batched: bool) -> str:
    """Hand a finished call's rows over; returns the path taken ("stream" or "database"). Raises
    LedgerUnavailable when neither store takes them."""
    if batched and settings.LLM_LEDGER["batched"]:
        try:
            _enqueue(entry)
            return "stream"
        except Exception:
            logger.warning("Ledger stream unavailable; writing call %s at once", entry.call_id, exc_info=True)
            metrics.store_error("redis", "ledger")
    try:
        on_loop.blocking(write, [entry], checked=True)
        return "database"
    except DatabaseError:
        logger.warning("Ledger insert failed; queueing call %s for the writer", entry.call_id, exc_info=True)
        metrics.store_error("database", "ledger")
    try:
        _enqueue(entry)
        return "stream"
    except Exception as exc:
        metrics.store_error("redis", "ledger")
        logger.error("Neither the database nor Redis took the ledger row of call %s", entry.call_id)
        raise LedgerUnavailable(
            "We could not record this call, so its answer was withheld and nothing was charged. Try again shortly."
        ) from exc


def _enqueue(entry: Entry) -> None:
    get_redis().xadd(STREAM, {"entry": entry.encode()})
    metrics.LEDGER_WRITTEN.labels("stream").inc()


# On the event loop (the gateway's async path): the entry to the stream, the call's quota place settled
# (billing.quota) and its answer kept in the exact cache, in one round trip. The XADD comes first: if Redis
# refuses it, the script stops before settling. KEYS: the stream, the quota's used and held counters, the cache
# key (the stream's name where one is not needed); ARGV: the entry, "" (no place to settle), "0" or "1"
# (billable), the place's token, the cached payload ("" for none) and its time to live.
_ENQUEUE = (
    "redis.call('XADD', KEYS[1], '*', 'entry', ARGV[1])\n"
    "if ARGV[4] ~= '' then redis.pcall('SET', KEYS[4], ARGV[4], 'EX', ARGV[5]) end\n"  # never fails the row
    "if ARGV[2] == '' then return -1 end\n"
    + quota.settle_lua(used="KEYS[2]", held="KEYS[3]", place="ARGV[3]", billable="ARGV[2]")
)
_enqueue_sha = hashlib.sha1(_ENQUEUE.encode()).hexdigest()  # noqa: S324  (Redis names scripts so)


async def aenqueue(
    entry: Entry, *, settle: quota.Reservation | None, billable: bool, cache: tuple[str, str] | None = None
) -> int:
    """`_enqueue` on asyncio Redis, settling the call's quota place (`settle`, kept in Redis) and keeping its
    answer in the exact cache (`cache`: key and payload) in the same script. Returns the period's count of
    used requests after a billable settle, else -1. Raises what Redis raises (the caller falls back)."""
    redis = get_async_redis()
    keys = [STREAM, *(settle.keys if settle is not None else (STREAM, STREAM)), cache[0] if cache else STREAM]
    args = [entry.encode(), "" if settle is None else ("1" if billable else "0"), settle.token if settle else "",
            cache[1] if cache else "", settings.LLM_CACHE_TTL]  # fmt: skip
    try:
        used = await redis.evalsha(_enqueue_sha, len(keys), *keys, *args)
    except NoScriptError:
        used = await redis.eval(_ENQUEUE, len(keys), *keys, *args)  # loads it for the next call
    metrics.LEDGER_WRITTEN.labels("stream").inc()
    return int(used)


# --- Writing rows --------------------------------------------------------------------------------------------


def _insert_ignoring_conflicts(model: Any, rows: list[dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING of rows as their entries carry them (JSON values keyed by column): every
    column as given (created_at is the call's, not now), the model's default for a column not given, each value
    read by PostgreSQL as its column's type. One statement run for every row: Django's bulk insert built a model
    object per row, prepared each value field by field and sent the batch as arrays composed in Python, about
    two thirds of the writer's CPU per row."""
    if not rows:
        return
    fields = model._meta.concrete_fields
    json_columns = {field.attname for field in fields if field.get_internal_type() == "JSONField"}
    defaults = {field.attname: field for field in fields if field.has_default()}

    def value(row: dict[str, Any], name: str) -> Any:
        given = row[name] if name in row else (defaults[name].get_default() if name in defaults else None)
        return orjson.dumps(given).decode() if name in json_columns else given

    names = [field.attname for field in fields]
    statement = (
        f"INSERT INTO {connection.ops.quote_name(model._meta.db_table)} "  # noqa: S608  (our own names)
        f"({', '.join(connection.ops.quote_name(field.column) for field in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))}) ON CONFLICT DO NOTHING"
    )
    with connection.cursor() as cursor:
        cursor.executemany(statement, [[value(row, name) for name in names] for row in rows])


def write(entries: list[Entry], *, checked: bool = False) -> int:
    """Insert the rows of these entries in one transaction (a savepoint within the caller's); rows already there
    are left alone. Rows of an org that no longer exists (erased meanwhile) are dropped; a member or key deleted
    meanwhile is left out (an erased member's prompt and answer with them). `checked`: the rows come straight
    from their call, whose org, member and key exist."""
    from billing.models import UsageEvent

    if not entries:
        return 0
    if checked:
        with transaction.atomic():
            _insert_ignoring_conflicts(LLMCall, [e.call for e in entries])
            _insert_ignoring_conflicts(UsageEvent, [e.usage for e in entries if e.usage])
            _insert_traces([e.trace for e in entries if e.trace])
        return len(entries)
    return _write_checked(entries)


def _insert_traces(traces: list[dict[str, Any]]) -> None:
    """The traces that ended with their calls, and their spans, in a savepoint: tracing never costs a call
    its ledger row (a failure here is logged and the traces dropped, as tracing.Recorder.flush does)."""
    from saas.llm.trace_models import Span, Trace

    if not traces:
        return
    try:
        with transaction.atomic():
            _insert_ignoring_conflicts(Trace, [t["trace"] for t in traces])
            _insert_ignoring_conflicts(Span, [s for t in traces for s in t["spans"]])
    except DatabaseError:
        logger.exception("The traces of %s calls could not be recorded", len(traces))


def _write_checked(entries: list[Entry]) -> int:
    from accounts.models import ApiKey, Organization, User
    from billing.models import UsageEvent

    calls = [dict(e.call) for e in entries]
    orgs = {str(pk) for pk in Organization.objects.filter(pk__in={c["organization_id"] for c in calls})
            .values_list("pk", flat=True)}  # fmt: skip
    users = {str(pk) for pk in User.objects.filter(pk__in={c["user_id"] for c in calls if c.get("user_id")})
             .values_list("pk", flat=True)}  # fmt: skip
    keys = {str(pk) for pk in ApiKey.all_orgs.filter(pk__in={c["api_key_id"] for c in calls if c.get("api_key_id")})
            .values_list("pk", flat=True)}  # fmt: skip
    kept_calls, kept_usage, kept_traces = [], [], []
    for entry, call in zip(entries, calls, strict=True):
        if str(call["organization_id"]) not in orgs:
            logger.info("Dropping the ledger row of call %s: its org is gone", call["id"])
            continue
        if call.get("user_id") and str(call["user_id"]) not in users:
            # The member was erased meanwhile: the row keeps no trace of what they asked or were answered.
            call.update(user_id=None, input_encrypted="", output_encrypted="")
        if call.get("api_key_id") and str(call["api_key_id"]) not in keys:
            call["api_key_id"] = None
        kept_calls.append(call)
        if entry.usage is not None:
            kept_usage.append(entry.usage)
        if entry.trace:
            trace = dict(entry.trace["trace"])  # its member or key gone meanwhile: left out (SET_NULL)
            trace.update(user_id=trace["user_id"] if trace.get("user_id") in users else None,
                         api_key_id=trace["api_key_id"] if trace.get("api_key_id") in keys else None)  # fmt: skip
            kept_traces.append({"trace": trace, "spans": entry.trace["spans"]})
    with transaction.atomic():
        _insert_ignoring_conflicts(LLMCall, kept_calls)
        _insert_ignoring_conflicts(UsageEvent, kept_usage)
        _insert_traces(kept_traces)
    return len(kept_calls)


# --- The background writer -----------------------------------------------------------------------------------


def _consumer() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _ensure_group(redis: Any) -> None:
    try:
        redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except Exception as exc:  # BUSYGROUP: it exists
        if "BUSYGROUP" not in str(exc):
            raise


def _take(redis: Any, consumer: str, count: int, claim_ms: int) -> list[tuple[str, dict[str, str] | None]]:
    """Entries another writer took and never acknowledged (it died mid-batch) first, then new ones."""
    claimed = redis.xautoclaim(STREAM, GROUP, consumer, min_idle_time=claim_ms, start_id="0-0", count=count)
    messages = list(claimed[1]) if claimed and len(claimed) > 1 else []
    if messages:
        return messages
    fresh = redis.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=count)
    return list(fresh[0][1]) if fresh else []


def drain(*, batches: int = 20, batch_size: int | None = None, claim_seconds: float | None = None) -> int:
    """Write what the stream holds, a batch per transaction, acknowledging a batch only once it is committed.
    Returns the number of rows written (rows already there included). Safe to run in several processes."""
    redis = get_redis()
    _ensure_group(redis)
    size = batch_size or settings.LLM_LEDGER["batch_size"]
    claim_ms = int(1000 * (settings.LLM_LEDGER["claim_seconds"] if claim_seconds is None else claim_seconds))
    consumer = _consumer()
    written = 0
    for _ in range(batches):
        messages = _take(redis, consumer, size, claim_ms)
        if not messages:
            break
        ids, entries, poisoned = [], [], []
        for message_id, fields in messages:
            ids.append(message_id)
            try:
                entries.append((message_id, Entry.decode((fields or {})["entry"])))
            except Exception:
                logger.error("Unreadable ledger stream entry %s; moved aside", message_id)
                poisoned.append((message_id, fields))
        try:
            written += write([e for _, e in entries])
        except DatabaseError:
            if not _database_up():
                raise  # the batch stays pending and is claimed again once the database is back
            written += _write_one_by_one(redis, entries, poisoned)
        for message_id, fields in poisoned:
            redis.xadd(DEAD, {"id": message_id, "entry": json.dumps(fields or {})})
        redis.xack(STREAM, GROUP, *ids)
        redis.xdel(STREAM, *ids)
        metrics.LEDGER_WRITTEN.labels("writer").inc(len(ids))
    return written


def _database_up() -> bool:
    from django.db import connection

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except DatabaseError:
        return False


def _write_one_by_one(redis: Any, entries: list[tuple[str, Entry]], poisoned: list[Any]) -> int:
    """A batch the database refused although it is up: write each entry alone, and set aside the ones it
    refuses (an operator inspects crewdesk:llm:ledger:dead) so they cannot block the stream."""
    written = 0
    for message_id, entry in entries:
        try:
            written += write([entry])
        except DatabaseError:
            logger.exception("The database refused the ledger row of call %s; moved aside", entry.call_id)
            poisoned.append((message_id, {"entry": entry.encode()}))
    return written


def pending() -> int:
    """Entries in the stream not yet written (for /readyz and tests)."""
    try:
        return int(get_redis().xlen(STREAM))
    except Exception:
        return 0


def catch_up() -> int:
    """For a reader that missed a row it expects (feedback on an API answer): write one batch of the stream
    now. A store outage makes it a no-op (the reader then finds nothing, as before)."""
    try:
        return drain(batches=1)
    except Exception:
        logger.warning("Could not catch up with the ledger stream", exc_info=True)
        return 0


def groundedness_record(*, org: Any, call_id: Any, value: float | None) -> bool:
    """Note how well a grounded answer's citations support it on its row (documents.ask checks the answer once
    the call has ended; experiments and dashboards read it). A row still in the writer's stream is written
    first. True if a row took it; a failure here is logged, never the answer's."""
    if value is None or not call_id:
        return False
    try:
        rows = LLMCall.objects.for_org(org).filter(pk=call_id).update(groundedness=value)
        if not rows:
            drain(batches=2)
            rows = LLMCall.objects.for_org(org).filter(pk=call_id).update(groundedness=value)
    except (DatabaseError, ValueError):
        logger.warning("Could not record the groundedness of call %s", call_id, exc_info=True)
        return False
    return bool(rows)
