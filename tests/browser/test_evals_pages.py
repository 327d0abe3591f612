"""The evals pages in a browser, on a laptop and on a phone: a thumbs-down becomes a case in one click, the
dataset page lists it with the import and run forms, a run's results read case by case with their scores and
reasons, and two runs are compared. The CSP refuses nothing and the page never scrolls sideways."""

import json
from typing import Any

import pytest

from agents.models import Feedback
from saas.core import crypto
from tests.accounts.factories import MembershipFactory
from tests.agents.factories import FeedbackFactory
from tests.analytics.factories import EvalCaseFactory, EvalDatasetFactory, EvalResultFactory, EvalRunFactory
from tests.browser.conftest import sign_in
from tests.llm.factories import LLMCallFactory

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

ANSWER = "Refunds take 30 days from the purchase date. [1] Customers receive an email when the refund is sent. [1]"


@pytest.mark.parametrize(("width", "height"), [(1366, 900), (390, 844)])
def test_a_thumbs_down_becomes_a_case_and_a_run_reads_case_by_case(browser, daphne_server, screenshot, width, height):
    admin: Any = MembershipFactory(role="admin")
    org = admin.organization
    asker: Any = MembershipFactory(role="member", organization=org)
    question = "How long do refunds take, and are customers told?"
    call = LLMCallFactory(organization=org, feature="ask", user=asker.user, input_encrypted=crypto.encrypt(json.dumps(
        [{"role": "system", "content": "Answer... [1] Refunds take 30 days."}, {"role": "user", "content": question}])),
        output_encrypted=crypto.encrypt("Refunds take 90 days."))  # fmt: skip
    FeedbackFactory(organization=org, message=None, llm_call=call, user=asker.user, rating=Feedback.Rating.DOWN,
                    comment="The number is wrong: the handbook says 30 days.")  # fmt: skip
    dataset = EvalDatasetFactory(organization=org, name="Refund questions", max_drop=0.05,
                                 description="What customers ask support most.")  # fmt: skip
    asked = (("How long do refunds take?", "30 days"), ("Where can staff park?", "north lot"))
    cases = [EvalCaseFactory(organization=org, dataset=dataset, input=q, expected_answer=e) for q, e in asked]
    before = EvalRunFactory(organization=org, dataset=dataset, prompt_version=1, case_count=2, passed_count=2,
                            scores={"cited_document": 1.0, "groundedness": 1.0, "answer": 1.0})  # fmt: skip
    after = EvalRunFactory(organization=org, dataset=dataset, prompt_version=2, case_count=2, passed_count=1,
                           scores={"cited_document": 0.5, "groundedness": 0.5, "answer": 1.0})  # fmt: skip
    citation = [{"marker": 1, "chunk_id": "c", "document_id": "d", "title": "handbook.pdf", "page": 3, "quote": ""}]
    for case in cases:
        EvalResultFactory(organization=org, run=before, case=case, answer=ANSWER, citations=citation, passed=True,
                          scores={"groundedness": 1.0, "answer": 1.0}, latency_ms=41,
                          reasons={"groundedness": "Every sentence is supported by what it cites.",
                                   "answer": "The answer contains the expected text."})  # fmt: skip
    EvalResultFactory(organization=org, run=after, case=cases[0], answer=ANSWER, citations=citation, passed=True,
                      scores={"groundedness": 1.0, "answer": 1.0}, latency_ms=38,
                      reasons={"groundedness": "Every sentence is supported by what it cites.",
                               "answer": "The answer contains the expected text."})  # fmt: skip
    EvalResultFactory(organization=org, run=after, case=cases[1], answer="Parking is free for staff in the north lot.",
                      scores={"groundedness": 0.0, "answer": 1.0}, passed=False, latency_ms=35,
                      reasons={"groundedness": "2 sentences are not supported by what it cites.",
                               "answer": "The answer contains the expected text."})  # fmt: skip

    page = browser.new_page(viewport={"width": width, "height": height})
    sign_in(page, daphne_server.url, admin.user.email)
    o = f"{daphne_server.url}/o/{org.slug}"
    page.goto(f"{o}/evals/")
    assert "The number is wrong" in page.inner_text("#thumbs-down") and question in page.inner_text("#thumbs-down")
    screenshot(page, f"evals-{width}")
    page.click("#thumbs-down button[type=submit]")
    page.wait_for_url("**/cases/*/")
    assert page.locator("textarea[name=input]").input_value() == question
    assert "Case added to Thumbs-down" in page.inner_text("main")
    screenshot(page, f"eval-case-{width}")

    page.goto(f"{o}/evals/datasets/{dataset.pk}/")
    assert page.locator("table.eval-cases tbody tr").count() == 2
    assert (
        page.locator("#import input[type=file]").count() == 1 and page.locator("#run select[name=version]").count() == 1
    )
    screenshot(page, f"eval-dataset-{width}")

    page.goto(f"{o}/evals/runs/{after.pk}/")
    assert page.locator("article.result").count() == 2
    assert page.locator(".verdict-fail").count() == 1 and page.locator(".verdict-pass").count() == 1
    assert "2 sentences are not supported" in page.inner_text("#results")
    assert "1 of 2 cases passed" in page.inner_text("main")
    screenshot(page, f"eval-run-{width}")
    page.select_option("#against", str(before.pk))
    page.click("form.compare button[type=submit]")
    page.wait_for_url("**/diff/?against=*")
    assert "1 case stopped passing" in page.inner_text("main")
    assert page.locator(".verdict-regressed").count() == 1
    screenshot(page, f"eval-diff-{width}")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
