"""Traces, read: the list with its filters, one trace with its spans laid out as a timeline, and the trace a
ledger row, a crew run or a feedback belongs to. Reads only (the traces are written by saas/llm/tracing.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet
from django.urls import reverse

from saas.core.errors import NotFound
from saas.core.validators import is_uuid
from saas.llm.models import LLMCall, Span, Trace

TRACK = 100  # the timeline's width: bars are placed in percent of it (SVG without a viewBox: text is not stretched)


@dataclass(frozen=True)
class TraceFilters:
    kind: str = ""
    status: str = ""
    member: Any = None  # a user id
    key: Any = None  # an API key id
    subject: str = ""  # a crew run, conversation or message id
    since: datetime | None = None
    until: datetime | None = None
    search: str = ""  # words of the trace's name, or a trace / subject / request id


def trace_list(*, org: Any, filters: TraceFilters | None = None) -> QuerySet[Trace]:
    """The org's traces, newest first, filtered."""
    filters = filters or TraceFilters()
    traces = Trace.objects.for_org(org).select_related("user", "api_key").order_by("-started_at", "-id")
    if filters.kind:
        traces = traces.filter(kind=filters.kind)
    if filters.status:
        traces = traces.filter(status=filters.status)
    if filters.member:
        traces = traces.filter(user_id=filters.member)
    if filters.key:
        traces = traces.filter(api_key_id=filters.key)
    if filters.subject:
        traces = traces.filter(subject_id=filters.subject)
    if filters.since:
        traces = traces.filter(started_at__gte=filters.since)
    if filters.until:
        traces = traces.filter(started_at__lt=filters.until)
    if search := filters.search.strip():
        if is_uuid(search):
            traces = traces.filter(Q(pk=search) | Q(subject_id=search) | Q(request_id=search))
        else:
            traces = traces.filter(Q(name__icontains=search) | Q(request_id=search))
    return traces


def trace_get(*, org: Any, trace_id: Any) -> Trace:
    """One trace of the org; another org's (or none) is NotFound."""
    if not is_uuid(trace_id):
        raise NotFound("No such trace.")
    trace = Trace.objects.for_org(org).select_related("user", "api_key").filter(pk=trace_id).first()
    if trace is None:
        raise NotFound("No such trace.")
    return trace


def trace_spans(*, trace: Trace) -> list[Span]:
    return list(Span.objects.for_org(trace.organization_id).filter(trace=trace).order_by("start_ms", "seq"))


def trace_for_call(*, org: Any, call: LLMCall) -> str | None:
    """The id of the trace a ledger row belongs to, if it was recorded."""
    if call.trace_id and Trace.objects.for_org(org).filter(pk=call.trace_id).exists():
        return call.trace_id
    return None


def trace_for_subject(*, org: Any, subject_id: Any) -> str | None:
    """The latest trace about a crew run or a chat message."""
    found = Trace.objects.for_org(org).filter(subject_id=str(subject_id)).order_by("-started_at").first()
    return str(found.pk) if found else None


# --- The timeline ----------------------------------------------------------------------------------------


@dataclass
class Row:
    span: Span
    depth: int
    x: float  # the bar's start and width, in percent of the track
    width: float
    label_after: bool  # the latency label sits after the bar (else it ends where the bar starts)
    end: float = 0.0  # x + width
    passages: list[dict[str, Any]] = field(default_factory=list)  # retrieval: with the documents' titles
    ledger_url: str = ""


@dataclass
class Timeline:
    trace: Trace
    rows: list[Row]
    total_ms: int
    ticks: list[tuple[float, str]]  # (x in percent, label)
    by_kind: dict[str, int]  # spans per kind
    subject: tuple[str, str] | None = None  # (what, url): the crew run or chat the trace is about


def _tick_step(total_ms: int) -> int:
    for step in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 30_000, 60_000, 300_000, 600_000):
        if total_ms / step <= 5:
            return step
    return 3_600_000


def _ms(value: int) -> str:
    return f"{value / 1000:g} s" if value >= 1000 else f"{value} ms"


def timeline(*, org: Any, trace: Trace) -> Timeline:
    """The trace's spans as rows of a timeline: nested under their parents, each bar placed on one scale."""
    from documents.models import Document

    spans = trace_spans(trace=trace)
    total = max([trace.duration_ms, 1, *(s.end_ms for s in spans)])
    children: dict[int | None, list[Span]] = {}
    for span in spans:
        children.setdefault(span.parent_seq, []).append(span)
    known = {span.seq for span in spans}
    ordered: list[tuple[Span, int]] = []

    def walk(parent: int | None, depth: int) -> None:
        for span in children.get(parent, []):
            ordered.append((span, depth))
            walk(span.seq, depth + 1)

    walk(None, 0)
    for span in spans:  # a span whose parent was not kept (a trace cut at its span limit) goes at the top level
        if span.parent_seq is not None and span.parent_seq not in known:
            ordered.append((span, 0))
            walk(span.seq, 1)
    document_ids = {p.get("document_id") for s in spans if s.kind == Span.Kind.RETRIEVAL
                    for p in s.attributes.get("passages", [])}  # fmt: skip
    titles = dict(
        Document.objects.for_org(org).filter(pk__in=[d for d in document_ids if d and is_uuid(d)]).values_list(
            "pk", "title"
        )
    )  # fmt: skip
    titles = {str(k): v for k, v in titles.items()}
    rows = []
    for span, depth in ordered:
        x = TRACK * span.start_ms / total
        width = max(TRACK * span.latency_ms / total, 0.4)
        passages = [
            {**p, "title": titles.get(str(p.get("document_id")), "a deleted document"),
             "url": reverse("document-detail", args=[trace.organization.slug, p["document_id"]])
             + f"#chunk-{p.get('chunk_id')}" if str(p.get("document_id")) in titles else ""}
            for p in span.attributes.get("passages", [])
        ]  # fmt: skip
        ledger = (reverse("request-detail", args=[trace.organization.slug, span.llm_call_id])
                  if span.llm_call_id else "")  # fmt: skip
        rows.append(Row(span=span, depth=min(depth, 4), x=round(x, 3), width=round(width, 3),
                        label_after=x + width < TRACK * 0.75, end=round(x + width, 3), passages=passages,
                        ledger_url=ledger))  # fmt: skip
    step = _tick_step(total)
    ticks = [(round(TRACK * at / total, 3), _ms(at)) for at in range(0, total + 1, step) if TRACK * at / total <= 92]
    by_kind: dict[str, int] = {}
    for span in spans:
        by_kind[span.kind] = by_kind.get(span.kind, 0) + 1
    return Timeline(trace, rows, total, ticks, by_kind, subject_link(org=org, trace=trace))


def subject_link(*, org: Any, trace: Trace) -> tuple[str, str] | None:
    """The page of what the trace is about: its crew run, or the conversation of its chat turn."""
    from agents.models import Message, Run

    if not trace.subject_id or not is_uuid(trace.subject_id):
        return None
    slug = trace.organization.slug
    if trace.kind == Trace.Kind.CREW_RUN and Run.objects.for_org(org).filter(pk=trace.subject_id).exists():
        return "Crew run", reverse("run-detail", args=[slug, trace.subject_id])
    if trace.kind == Trace.Kind.CHAT:
        conversation = Message.objects.for_org(org).filter(pk=trace.subject_id).values_list(
            "conversation_id", flat=True).first()  # fmt: skip
        if conversation is not None:
            return "Conversation", reverse("chat-conversation", args=[slug, conversation])
    return None


# --- As JSON (the API) -----------------------------------------------------------------------------------


def trace_json(trace: Trace) -> dict[str, Any]:
    return {
        "id": str(trace.pk), "kind": trace.kind, "name": trace.name, "status": trace.status,
        "error": trace.error_class, "subject_id": trace.subject_id or None, "started_at": trace.started_at.isoformat(),
        "duration_ms": trace.duration_ms, "llm_calls": trace.llm_calls,
        "tokens": {"prompt": trace.prompt_tokens, "completion": trace.completion_tokens,
                   "total": trace.prompt_tokens + trace.completion_tokens},
        "cost_usd": f"{trace.cost_usd:f}", "request_id": trace.request_id,
        "member": trace.user.email if trace.user_id and trace.user else None,
        "key": {"id": str(trace.api_key.pk), "prefix": trace.api_key.prefix, "name": trace.api_key.name}
        if trace.api_key_id and trace.api_key else None,
    }  # fmt: skip


def span_json(span: Span) -> dict[str, Any]:
    return {
        "seq": span.seq, "parent_seq": span.parent_seq, "kind": span.kind, "name": span.name,
        "start_ms": span.start_ms, "end_ms": span.end_ms, "latency_ms": span.latency_ms, "status": span.status,
        "llm_call_id": str(span.llm_call_id) if span.llm_call_id else None,
        "tokens": {"prompt": span.prompt_tokens, "completion": span.completion_tokens},
        "cost_usd": f"{span.cost_usd:f}", "attributes": span.attributes,
    }  # fmt: skip
