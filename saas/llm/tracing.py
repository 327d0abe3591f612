"""Tracing: one trace per ask, chat turn, generate call and crew run, with its spans.

A boundary (a view, a consumer, the crew engine) opens a `Recorder` and makes it current while its work runs:

    with tracing.trace(org=org, kind="ask", name="Ask", user=user) as recorder:
        ...                                    # every gateway call in here becomes an `llm` span

    for event in tracing.traced(recorder, events):   # a generator: the trace is current during each step
        ...

Lower layers add spans without being handed the recorder: `with tracing.span("retrieval", "Search") as span:`
is a no-op when no trace is current, and the gateway (saas/llm/call.py) records every model call it finishes as
an `llm` span of the current trace and stamps the trace's id on the ledger row.

Spans are kept in memory and written at the trace's end in two statements (the trace, then its spans in bulk);
a long job (a crew run) may `flush()` along the way. A trace of one API call (`/v1/chat/completions`, opened with
`ends_with_call=True`) ends with its model call instead: its rows go into the call's ledger entry (`rows`,
`ended_by_call`), so they reach PostgreSQL with the call's row, through the ledger writer's stream on the hot
path, and cost the call no transaction of its own. Tracing never breaks the work it watches: a failure to
record is logged and dropped. The current trace lives in a context variable; a generator that is stepped from
a thread pool (the websocket answers) is wrapped in `traced`, which makes the trace current around each step.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from django_guid import get_guid

logger = logging.getLogger(__name__)
_current: ContextVar[Recorder | None] = ContextVar("crewdesk_trace", default=None)
MAX_SPANS = 2000  # a runaway job keeps its first spans and says how many it dropped
NAME_CHARS = 200


@dataclass
class SpanRecord:
    seq: int
    parent_seq: int | None
    kind: str
    name: str
    start: float  # perf_counter
    end: float | None = None
    status: str = "ok"
    attributes: dict[str, Any] = field(default_factory=dict)
    llm_call_id: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    written: bool = False


class Recorder:
    """One trace in flight: its spans in memory until `finish` (or `flush`) writes them."""

    def __init__(
        self, *, org: Any, kind: str, name: str = "", subject_id: str = "", user: Any = None, api_key: Any = None,
        trace_id: Any = None, resumable: bool = False, ends_with_call: bool = False,
    ) -> None:  # fmt: skip
        self.id = uuid.UUID(str(trace_id)) if trace_id else uuid.uuid4()
        self.org_id = getattr(org, "pk", org)
        self.kind, self.name, self.subject_id = kind, name[:NAME_CHARS], str(subject_id or "")
        signed_in = user is not None and getattr(user, "is_authenticated", True)
        self.user_id = getattr(user, "pk", None) if signed_in else None
        self.api_key_id = getattr(api_key, "pk", None)
        self.request_id = get_guid() or ""
        self.resumable = resumable  # a job that may run again under the same id (a crew run after a lost worker)
        # One API call's trace (/v1/chat/completions): it ends with its model call, and its rows travel with the
        # call's ledger row (see `ended_by_call`) instead of a transaction of their own.
        self.ends_with_call = ends_with_call
        self.started = time.perf_counter()
        self.started_at = timezone.now()
        self.status, self.error_class = "ok", ""
        self.spans: list[SpanRecord] = []
        self.dropped = 0
        self._open: list[int] = []  # the seqs of the spans open now, innermost last
        self._lock = threading.Lock()
        self._stored = False  # the trace row exists
        self.finished = False

    # --- Spans ---------------------------------------------------------------------------------------------

    def _new(self, kind: str, name: str, start: float, attributes: dict[str, Any]) -> SpanRecord | None:
        with self._lock:
            if len(self.spans) >= MAX_SPANS:
                self.dropped += 1
                return None
            record = SpanRecord(len(self.spans) + 1, self._open[-1] if self._open else None, kind,
                                name[:NAME_CHARS], start, attributes=attributes)  # fmt: skip
            self.spans.append(record)
            return record

    @contextmanager
    def span(self, kind: str, name: str, **attributes: Any) -> Iterator[SpanRecord]:
        """A span around the block; spans opened (and model calls made) inside it are its children."""
        record = self._new(kind, name, time.perf_counter(), attributes)
        if record is None:
            yield SpanRecord(0, None, kind, name, time.perf_counter())  # not kept
            return
        self._open.append(record.seq)
        try:
            yield record
        except GeneratorExit:
            record.status = "cancelled"
            raise
        except BaseException as exc:
            record.status = "error"
            record.attributes.setdefault("error", getattr(exc, "kind", "") or type(exc).__name__)
            raise
        finally:
            record.end = time.perf_counter()
            if self._open and self._open[-1] == record.seq:
                self._open.pop()
            elif record.seq in self._open:
                self._open.remove(record.seq)

    def model_call(
        self, *, call_id: Any, started: float, name: str, status: str, prompt_tokens: int, completion_tokens: int,
        cost_usd: Decimal, **attributes: Any,
    ) -> None:  # fmt: skip
        """A gateway call that just finished (saas/llm/call.py), as an `llm` span under the innermost open one."""
        record = self._new("llm", name, started, attributes)
        if record is not None:
            record.end, record.status, record.llm_call_id = time.perf_counter(), status, str(call_id)
            record.prompt_tokens, record.completion_tokens, record.cost_usd = prompt_tokens, completion_tokens, cost_usd

    # --- Being current -------------------------------------------------------------------------------------

    @contextmanager
    def active(self) -> Iterator[Recorder]:
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)

    def fail(self, exc: BaseException) -> None:
        # A stream closed by its reader, a run stopped by a member.
        if isinstance(exc, GeneratorExit) or getattr(exc, "status", "") == "cancelled":
            self.status = "cancelled"
        else:
            self.status = "error"
            self.error_class = (getattr(exc, "code", "") or getattr(exc, "kind", "") or type(exc).__name__)[:64]

    # --- Writing -------------------------------------------------------------------------------------------

    def _offset(self, at: float, base_ms: int) -> int:
        return max(0, base_ms + round((at - self.started) * 1000))

    def flush(self) -> None:
        """Write the trace row (created, or brought up to date) and the spans closed since the last flush."""
        try:
            with transaction.atomic():  # a savepoint inside a request's transaction: a failure stays here
                self._write()
        except Exception:
            logger.exception("A trace could not be recorded (trace %s)", self.id)

    def finish(self, status: str | None = None) -> None:
        """End the trace and write it; runs once. Open spans are closed now."""
        if self.finished:
            return
        self.finished = True
        if status:
            self.status = status
        now = time.perf_counter()
        for record in self.spans:
            if record.end is None:
                record.end = now
        self.flush()

    def _totals(self, calls: list[SpanRecord]) -> dict[str, Any]:
        return {
            "llm_calls": len(calls), "prompt_tokens": sum(r.prompt_tokens for r in calls),
            "completion_tokens": sum(r.completion_tokens for r in calls),
            "cost_usd": sum((r.cost_usd for r in calls), Decimal(0)),
        }  # fmt: skip

    def rows(self) -> dict[str, Any] | None:
        """End the trace and return its rows (the trace and its spans, JSON-ready, keyed by column) for the
        ledger to write with the call's row (saas/llm/ledger.py), instead of writing them here. A trace that may
        exist already (resumable, or flushed before) is written here as usual, and None returned."""
        if self.finished:
            return None
        if self.resumable or self._stored:
            self.finish()
            return None
        self.finished = True
        now = time.perf_counter()
        for record in self.spans:
            if record.end is None:
                record.end = now
        stamp = timezone.now().isoformat()
        trace_id = str(self.id)
        calls = [r for r in self.spans if r.kind == "llm"]
        trace = {
            "id": trace_id, "created_at": stamp, "updated_at": stamp, "organization_id": str(self.org_id),
            "kind": self.kind, "name": self.name, "subject_id": self.subject_id,
            "user_id": str(self.user_id) if self.user_id else None,
            "api_key_id": str(self.api_key_id) if self.api_key_id else None, "request_id": self.request_id,
            "status": self.status, "error_class": self.error_class, "started_at": self.started_at.isoformat(),
            "duration_ms": self._offset(now, 0), **self._totals(calls),
        }  # fmt: skip
        spans = [
            {
                "id": str(uuid.uuid5(self.id, str(r.seq))), "created_at": stamp, "updated_at": stamp,
                "organization_id": str(self.org_id), "trace_id": trace_id, "seq": r.seq, "parent_seq": r.parent_seq,
                "kind": r.kind, "name": r.name, "start_ms": self._offset(r.start, 0),
                "end_ms": self._offset(r.end or now, 0), "status": r.status, "llm_call_id": r.llm_call_id,
                "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens, "cost_usd": r.cost_usd,
                "attributes": r.attributes,
            } for r in self.spans
        ]  # fmt: skip
        for record in self.spans:
            record.written = True
        self._stored = True
        return {"trace": trace, "spans": spans}

    def _write(self) -> None:
        from saas.llm.trace_models import Span, Trace

        now = time.perf_counter()
        base_ms, next_seq = 0, 0
        trace = None
        if self.resumable or self._stored:
            trace = Trace.all_orgs.select_for_update().filter(pk=self.id, organization_id=self.org_id).first()
        if trace is not None and not self._stored:  # an earlier attempt of the same job: append after its spans
            base_ms = max(0, round((self.started_at - trace.started_at).total_seconds() * 1000))
            written = Span.all_orgs.filter(trace_id=self.id, organization_id=self.org_id).aggregate(last=Max("seq"))
            next_seq = written["last"] or 0
            self._base_ms, self._seq_base = base_ms, next_seq
        elif trace is not None:
            base_ms, next_seq = getattr(self, "_base_ms", 0), getattr(self, "_seq_base", 0)
        closed = [r for r in self.spans if r.end is not None and not r.written]
        totals = self._totals([r for r in closed if r.kind == "llm"])
        duration = self._offset(now, base_ms)
        if trace is None:
            trace = Trace.all_orgs.create(
                id=self.id, organization_id=self.org_id, kind=self.kind, name=self.name, subject_id=self.subject_id,
                user_id=self.user_id, api_key_id=self.api_key_id, request_id=self.request_id, status=self.status,
                error_class=self.error_class, started_at=self.started_at, duration_ms=duration, **totals,
            )  # fmt: skip
        else:
            trace.status, trace.error_class, trace.duration_ms = self.status, self.error_class, duration
            trace.llm_calls += totals["llm_calls"]
            trace.prompt_tokens += totals["prompt_tokens"]
            trace.completion_tokens += totals["completion_tokens"]
            trace.cost_usd += totals["cost_usd"]
            trace.save(update_fields=["status", "error_class", "duration_ms", "llm_calls", "prompt_tokens",
                                      "completion_tokens", "cost_usd", "updated_at"])  # fmt: skip
        self._stored = True
        if self.dropped and self.finished:
            logger.warning("Trace %s dropped %s spans past %s", self.id, self.dropped, MAX_SPANS)
        Span.all_orgs.bulk_create([
            Span(
                organization_id=self.org_id, trace_id=self.id, seq=next_seq + r.seq,
                parent_seq=next_seq + r.parent_seq if r.parent_seq else None, kind=r.kind, name=r.name,
                start_ms=self._offset(r.start, base_ms), end_ms=self._offset(r.end or now, base_ms), status=r.status,
                llm_call_id=r.llm_call_id, prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens,
                cost_usd=r.cost_usd, attributes=r.attributes,
            ) for r in closed
        ])  # fmt: skip
        for r in closed:
            r.written = True


# --- What the rest of the code calls -----------------------------------------------------------------------


def current() -> Recorder | None:
    return _current.get()


def start(**kwargs: Any) -> Recorder | None:
    """A new trace, or None when one is current already (an ask inside a chat turn is part of the turn's)."""
    if _current.get() is not None:
        return None
    try:
        return Recorder(**kwargs)
    except Exception:
        logger.exception("A trace could not be started")
        return None


def for_caller(caller: Any, kind: str, name: str = "", **kwargs: Any) -> dict[str, Any]:
    """The arguments of a trace for a gateway `Caller` (its org, member and key)."""
    return {"org": caller.org, "kind": kind, "name": name, "user": caller.user, "api_key": caller.api_key, **kwargs}


@contextmanager
def trace(*, defer: bool = False, **kwargs: Any) -> Iterator[Recorder | None]:
    """A trace around the block (see `Recorder` for the arguments), written when the block ends; inside a
    trace already, the block is part of that one. `defer`: a block that ends well leaves the writing to the
    caller (`recorder.finish`, e.g. after the response is sent); one that fails is written at once. Yields the
    new recorder, or None inside another trace."""
    recorder = start(**kwargs)
    if recorder is None:
        yield None
        return
    try:
        with recorder.active():
            yield recorder
    except BaseException as exc:
        recorder.fail(exc)
        recorder.finish()
        raise
    if not defer:
        recorder.finish()


def traced_call(
    recorder: Recorder | None, make: Callable[[], Generator[Any, None, None]]
) -> Generator[Any, None, None]:
    """`make()` run with the recorder current (the gateway's streams validate before their first item), its
    items then `traced`."""
    if recorder is None:
        return make()
    try:
        with recorder.active():
            items = make()
    except BaseException as exc:
        recorder.fail(exc)
        recorder.finish()
        raise
    return traced(recorder, items)


def traced(recorder: Recorder | None, items: Generator[Any, None, None]) -> Generator[Any, None, None]:
    """`items`, with `recorder` current while each item is made (and while it is closed); the trace is written
    when the items end, fail or are closed. Without a recorder, the items as they are."""
    if recorder is None:
        yield from items
        return
    try:
        while True:
            with recorder.active():
                try:
                    item = next(items)
                except StopIteration:
                    return
            yield item
    except BaseException as exc:
        recorder.fail(exc)
        raise
    finally:
        with recorder.active():
            items.close()
        recorder.finish()


@contextmanager
def span(kind: str, name: str, **attributes: Any) -> Iterator[SpanRecord | None]:
    """A span of the current trace around the block; nothing at all without one."""
    recorder = _current.get()
    if recorder is None:
        yield None
        return
    with recorder.span(kind, name, **attributes) as record:
        yield record


def model_call(**kwargs: Any) -> str:
    """For the gateway: record a finished model call on the current trace; returns the trace's id ('' without
    one). Never raises."""
    recorder = _current.get()
    if recorder is None:
        return ""
    try:
        recorder.model_call(**kwargs)
    except Exception:
        logger.exception("A model call could not be added to its trace")
    return str(recorder.id)


def ended_by_call(status: str, error: BaseException | None) -> dict[str, Any] | None:
    """For the gateway, once the current trace's model call is recorded: the trace's rows when it is one that
    ends with its call (`Recorder(ends_with_call=True)`), to be written with the call's ledger row; None
    otherwise (no trace, or one that goes on). Never raises."""
    recorder = _current.get()
    if recorder is None or not recorder.ends_with_call or recorder.finished:
        return None
    try:
        if status == "cancelled":
            recorder.status = "cancelled"
        elif error is not None:
            recorder.fail(error)
        return recorder.rows()
    except Exception:
        logger.exception("A trace could not be recorded (trace %s)", recorder.id)
        return None


def current_id() -> str:
    recorder = _current.get()
    return str(recorder.id) if recorder is not None else ""


def traces(kind: str, name: str, *, subject: Callable[[dict[str, Any]], Any] | None = None) -> Callable[[Any], Any]:
    """Decorates a service taking a keyword `caller` (a gateway Caller): each call is a trace of its own (or part
    of the current one). A generator function's trace covers its items (see `traced`). `subject(kwargs)`: the
    id the trace is about (a conversation, a run)."""

    def arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
        about = subject(kwargs) if subject is not None else ""
        return for_caller(kwargs["caller"], kind, name, subject_id=str(about or ""))

    def wrap(function: Any) -> Any:
        if inspect.isgeneratorfunction(function):

            @functools.wraps(function)
            def items(*args: Any, **kwargs: Any) -> Generator[Any, None, None]:
                return traced(start(**arguments(kwargs)), function(*args, **kwargs))

            return items

        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            with trace(**arguments(kwargs)):
                return function(*args, **kwargs)

        return call

    return wrap
