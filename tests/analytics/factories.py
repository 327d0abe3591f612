from datetime import UTC, datetime

import factory

from analytics.models import EvalCase, EvalDataset, EvalResult, EvalRun
from saas.llm.models import Span, Trace
from tests.accounts.factories import OrgOwnedFactory


class EvalDatasetFactory(OrgOwnedFactory):
    class Meta:
        model = EvalDataset

    name = factory.Sequence(lambda n: f"Dataset {n}")


class EvalCaseFactory(OrgOwnedFactory):
    class Meta:
        model = EvalCase

    dataset = factory.SubFactory(EvalDatasetFactory, organization=factory.SelfAttribute("..organization"))
    input = "How long do refunds take?"


class EvalRunFactory(OrgOwnedFactory):
    class Meta:
        model = EvalRun

    dataset = factory.SubFactory(EvalDatasetFactory, organization=factory.SelfAttribute("..organization"))
    prompt_key = "ask.system"
    system_prompt = "Answer from the sources and cite them."
    status = EvalRun.Status.SUCCEEDED


class EvalResultFactory(OrgOwnedFactory):
    class Meta:
        model = EvalResult

    run = factory.SubFactory(EvalRunFactory, organization=factory.SelfAttribute("..organization"))
    case = factory.SubFactory(
        EvalCaseFactory,
        organization=factory.SelfAttribute("..organization"),
        dataset=factory.SelfAttribute("..run.dataset"),
    )


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
