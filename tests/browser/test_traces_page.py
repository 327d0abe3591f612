"""A trace in a browser, on a laptop and on a phone: from the request log to the trace's timeline, a span's
details opened (the passages retrieved, with their documents; a model call's tokens and cost and its ledger row),
no sideways scrolling, and the CSP refuses nothing."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from saas.llm.models import Span
from tests.accounts.factories import MembershipFactory
from tests.agents.factories import CrewFactory, RunFactory
from tests.analytics.factories import SpanFactory, TraceFactory
from tests.browser.conftest import sign_in
from tests.documents.factories import ChunkFactory, DocumentFactory
from tests.llm.factories import LLMCallFactory

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def crew_trace(org: Any, user: Any) -> tuple[Any, list[Any]]:
    """A crew run's trace as the engine records it: two tasks, a search tool with its retrieval, model calls."""
    run = RunFactory(organization=org, crew=CrewFactory(organization=org, name="Research brief"))
    trace = TraceFactory(organization=org, id=run.pk, kind="crew_run", name="Crew run: Research brief",
                         subject_id=str(run.pk), user=user, started_at=datetime.now(UTC), duration_ms=4210, llm_calls=3,
                         prompt_tokens=812 + 1240 + 1530, completion_tokens=64 + 310 + 402,
                         cost_usd=Decimal("0.00123"))  # fmt: skip
    document = DocumentFactory(organization=org, title="Refund policy.pdf")
    chunks = [ChunkFactory(organization=org, document=document) for _ in range(3)]
    calls = []

    def call(seq: int, parent: int, start: int, end: int, model: str, tokens: tuple[int, int], cost: str) -> None:
        row = LLMCallFactory(organization=org, feature="crew", trace_id=str(run.pk), model_used=model,
                             prompt_tokens=tokens[0], completion_tokens=tokens[1], cost_usd=cost,
                             latency_ms=end - start, user=user)  # fmt: skip
        calls.append(row)
        SpanFactory(organization=org, trace=trace, seq=seq, parent_seq=parent, kind="llm", name=model,
                    start_ms=start, end_ms=end, llm_call_id=row.pk, prompt_tokens=tokens[0],
                    completion_tokens=tokens[1], cost_usd=Decimal(cost),
                    attributes={"operation": "chat", "cache": "miss", "stream": True, "ttft_ms": 180})  # fmt: skip

    SpanFactory(organization=org, trace=trace, seq=1, kind="step", name="Task research", start_ms=5, end_ms=2300,
                attributes={"task": "research", "agent": "researcher"})  # fmt: skip
    call(2, 1, 10, 900, "gpt-4o-mini", (812, 64), "0.00016")
    SpanFactory(organization=org, trace=trace, seq=3, parent_seq=1, kind="tool", name="search_documents",
                start_ms=905, end_ms=1240, attributes={"tool": "search_documents", "agent": "researcher"})  # fmt: skip
    SpanFactory(organization=org, trace=trace, seq=4, parent_seq=3, kind="retrieval", name="Search the documents",
                start_ms=960, end_ms=1230, attributes={"top_k": 5, "passages": [
                    {"chunk_id": str(c.pk), "document_id": str(document.pk), "score": 0.0325 - n / 1000,
                     "similarity": 0.71 - n / 10} for n, c in enumerate(chunks)]})  # fmt: skip
    call(5, 1, 1250, 2290, "gpt-4o-mini", (1240, 310), "0.00037")
    SpanFactory(organization=org, trace=trace, seq=6, kind="step", name="Task draft", start_ms=2310, end_ms=4200,
                attributes={"task": "draft", "agent": "writer"})  # fmt: skip
    call(7, 6, 2320, 4190, "claude-haiku", (1530, 402), "0.00090")
    return trace, calls


@pytest.mark.parametrize(("width", "height"), [(1366, 900), (390, 844)])
def test_a_trace_timeline_from_the_request_log(browser, daphne_server, screenshot, width, height):
    admin: Any = MembershipFactory(role="admin")
    org = admin.organization
    trace, calls = crew_trace(org, admin.user)
    TraceFactory(organization=org, kind="ask", name="Ask", user=admin.user, duration_ms=640, llm_calls=2)
    page = browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    sign_in(page, daphne_server.url, admin.user.email)

    page.goto(f"{daphne_server.url}/o/{org.slug}/requests/")
    page.click(f"#call-{calls[0].pk} a.trace-link")
    page.wait_for_url(f"**/traces/{trace.pk}/")
    rows = page.locator(".tl-row")
    assert rows.count() == Span.all_orgs.filter(trace=trace).count() == 7
    assert page.inner_text("#trace-cost") == "0.001230"  # the sum of its model calls
    assert page.inner_text("#trace-tokens") == f"{812 + 1240 + 1530} + {64 + 310 + 402}"
    # Nested as recorded: the retrieval inside the tool inside the task.
    assert page.get_attribute("#span-4", "class").split()[1] == "depth-2"
    screenshot(page, f"trace-timeline-{width}")

    page.click("#span-4 summary")
    assert page.locator("#span-4 table.passages tbody tr").count() == 3
    assert page.locator("#span-4 table.passages a", has_text="Refund policy.pdf").count() == 3
    page.click("#span-2 summary")
    details = page.inner_text("#span-2 .tl-details")
    assert "812 in, 64 out" in details and "0.00016000" in details
    screenshot(page, f"trace-details-{width}")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.click("#span-2 .tl-details a")
    page.wait_for_url(f"**/requests/{calls[0].pk}/")

    page.goto(f"{daphne_server.url}/o/{org.slug}/traces/")
    assert page.locator("#trace-table tbody tr").count() == 2
    screenshot(page, f"trace-list-{width}")
    page.select_option("select[name=kind]", "crew_run")
    page.click("form.trace-filters button[type=submit]")
    page.wait_for_url("**kind=crew_run**")
    assert page.locator("#trace-table tbody tr").count() == 1
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert not errors, errors
