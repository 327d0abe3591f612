"""The recorder itself (saas/llm/tracing.py): nesting, a job resumed under the same id, a stream closed early,
and the no-op without a current trace."""

import time
from decimal import Decimal

import pytest

from saas.llm import tracing
from saas.llm.models import Span, Trace
from tests.accounts.factories import OrganizationFactory

pytestmark = pytest.mark.django_db


def _call(name: str, tokens: int, cost: str) -> None:
    tracing.model_call(call_id=f"00000000-0000-0000-0000-{tokens:012d}", started=time.perf_counter(), name=name,
                       status="ok", prompt_tokens=tokens, completion_tokens=1, cost_usd=Decimal(cost))  # fmt: skip


def test_spans_nest_and_a_resumed_job_appends_to_its_trace():
    org = OrganizationFactory()
    job = "7d1c3f8e-9a0b-4c2d-8e1f-123456789abc"
    first = tracing.trace(org=org, kind="crew_run", name="Run", trace_id=job, resumable=True)
    with first, tracing.span("step", "Task one"):
        _call("m", 10, "0.001")
        with tracing.span("tool", "calculator"):
            pass
    again = tracing.trace(org=org, kind="crew_run", name="Run", trace_id=job, resumable=True)  # another worker
    with again, tracing.span("step", "Task two"):
        _call("m", 20, "0.002")
    trace = Trace.all_orgs.get(pk=job)
    spans = list(Span.all_orgs.filter(trace=trace).order_by("seq"))
    assert [(s.seq, s.parent_seq, s.kind, s.name) for s in spans] == [
        (1, None, "step", "Task one"), (2, 1, "llm", "m"), (3, 1, "tool", "calculator"),
        (4, None, "step", "Task two"), (5, 4, "llm", "m"),
    ]  # fmt: skip
    assert (trace.llm_calls, trace.prompt_tokens, trace.cost_usd) == (2, 30, Decimal("0.003"))
    assert spans[3].start_ms >= spans[0].start_ms  # the second attempt is placed after the first on the timeline


def test_a_stream_closed_early_is_a_cancelled_trace_and_an_error_is_an_error():
    org = OrganizationFactory()

    def items():
        with tracing.span("retrieval", "Search"):
            yield 1
        yield 2

    stream = tracing.traced(tracing.start(org=org, kind="ask", name="Ask"), items())
    assert next(stream) == 1
    stream.close()
    trace = Trace.all_orgs.get(organization=org)
    assert trace.status == "cancelled"
    assert Span.all_orgs.get(trace=trace).status == "cancelled"

    with pytest.raises(ValueError), tracing.trace(org=org, kind="generate", name="Generate"):
        raise ValueError("boom")
    assert Trace.all_orgs.get(organization=org, kind="generate").status == "error"


def test_nothing_is_recorded_without_a_current_trace_and_a_nested_trace_joins_the_outer_one():
    org = OrganizationFactory()
    with tracing.span("retrieval", "Search") as span:
        assert span is None
    assert tracing.model_call(call_id="x", started=0.0, name="m", status="ok", prompt_tokens=1, completion_tokens=1,
                              cost_usd=Decimal(0)) == ""  # fmt: skip
    with (
        tracing.trace(org=org, kind="chat", name="Chat turn") as outer,
        tracing.trace(org=org, kind="ask", name="Ask") as inner,
    ):
        assert inner is None and tracing.current() is outer
        _call("m", 5, "0")
    assert list(Trace.all_orgs.filter(organization=org).values_list("kind", "llm_calls")) == [("chat", 1)]
