from datetime import UTC, datetime

import factory

from saas.llm.models import Span, Trace
from tests.accounts.factories import OrgOwnedFactory


class TraceFactory(OrgOwnedFactory):
    class Meta:
        model = Trace

    kind = Trace.Kind.ASK
    name = "Ask"
    started_at = factory.LazyFunction(lambda: datetime.now(UTC))
    duration_ms = 120


class SpanFactory(OrgOwnedFactory):
    class Meta:
        model = Span

    trace = factory.SubFactory(TraceFactory, organization=factory.SelfAttribute("..organization"))
    seq = factory.Sequence(lambda n: n + 1)
    kind = Span.Kind.LLM
    name = "local"
    start_ms = 10
    end_ms = 100
