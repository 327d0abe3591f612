"""The LLM judge, through the gateway to a fake OpenAI-compatible upstream (the real protocol over a socket): its
verdict is the score, it sees the rubric, the question and the answer, and a judge that fails is a failed score
with the reason, not a crashed run."""

import pytest

from analytics import eval_runs
from analytics.models import EvalCase
from saas.llm import gateway
from tests.accounts.factories import OrganizationFactory
from tests.llm.conftest import fake, models  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db


def _case(org, question: str, rubric: str = "") -> EvalCase:
    case = EvalCase(organization=org, rubric=rubric)
    case.input = question  # the plaintext property (the model's constructor takes it too, but mypy knows fields)
    return case


def test_the_judge_grades_by_the_rubric_and_a_failing_judge_fails_the_score(fake, models):  # noqa: F811
    org = OrganizationFactory.create()
    caller = gateway.Caller(org=org, feature="eval")
    case = _case(org, "How long do refunds take?", rubric="Says 30 days and cites it.")
    fake.script("fake-small", {"reply": "PASS: it says 30 days [1]"}, {"reply": "FAIL: it says 90 days"},
                {"reply": "Looks fine to me"}, {"status": 400})  # fmt: skip
    assert eval_runs._judge(caller, "test-small", case, "Refunds take 30 days. [1]").value == 1.0
    sent = fake.requests()[-1]["body"]["messages"]
    assert "Says 30 days and cites it." in sent[-1]["content"] and "Refunds take 30 days. [1]" in sent[-1]["content"]
    assert eval_runs._judge(caller, "test-small", case, "Refunds take 90 days.").value == 0.0
    assert (
        eval_runs._judge(caller, "test-small", case, "Refunds take 30 days.").reason
        == "The judge's reply held no verdict."
    )
    failed = eval_runs._judge(caller, "test-small", case, "Refunds take 30 days.")
    assert failed.value == 0.0 and failed.reason.startswith("The judge could not answer")
    # No judge model, or no rubric: the scorer does not apply.
    assert not eval_runs._judge(caller, "", case, "x").applies
    assert not eval_runs._judge(caller, "test-small", _case(org, "Q"), "x").applies
