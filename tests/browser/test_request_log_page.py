"""The request log in a browser, on a laptop and on a phone: the filters narrow the list, a row opens the call
with its masked prompt and answer and a link to its crew run, and the CSP refuses nothing."""

from typing import Any

import pytest

from saas.core import crypto
from tests.accounts.factories import MembershipFactory
from tests.agents.factories import RunFactory
from tests.browser.conftest import sign_in
from tests.llm.factories import LLMCallFactory

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize(("width", "height"), [(1366, 900), (390, 844)])
def test_the_request_log_filters_and_opens_a_call(browser, daphne_server, screenshot, width, height):
    owner: Any = MembershipFactory(role="owner")
    org = owner.organization
    run = RunFactory(organization=org)
    crew_call = LLMCallFactory(
        organization=org,
        feature="crew",
        trace_id=str(run.pk),
        model_requested="auto",
        model_used="gpt-4o-mini",
        upstream="openai",
        prompt_tokens=812,
        completion_tokens=143,
        cost_usd="0.00021",
        latency_ms=1840,
        user=owner.user,
        input_encrypted=crypto.encrypt('[{"role": "user", "content": "Write to <EMAIL_1>"}]'),
        output_encrypted=crypto.encrypt("Drafted the note."),
        attempts=[{"model": "gpt-4o-mini", "upstream": "openai", "status": "ok", "latency_ms": 1800}],
    )
    for n in range(3):
        LLMCallFactory(organization=org, feature="ask", cache="semantic" if n else "miss", latency_ms=90 + n,
                       guardrails=[{"check": "injection", "action": "flagged", "target": "passage", "index": 2}]
                       if n == 1 else [])  # fmt: skip
    LLMCallFactory(organization=org, feature="generate", status="error", error_class="upstream_timeout")
    page = browser.new_page(viewport={"width": width, "height": height})
    sign_in(page, daphne_server.url, owner.user.email)
    page.goto(f"{daphne_server.url}/o/{org.slug}/requests/")
    assert page.locator("table.request-log tbody tr").count() == 5
    screenshot(page, f"request-log-{width}")
    page.select_option("select[name=feature]", "crew")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**feature=crew**")
    assert page.locator("table.request-log tbody tr").count() == 1
    page.click(f"#call-{crew_call.pk} a")
    page.wait_for_url(f"**/requests/{crew_call.pk}/")
    assert "Write to <EMAIL_1>" in page.inner_text("main")
    assert page.get_by_text("Drafted the note.").count() == 1
    assert page.locator(f'a[href="/o/{org.slug}/runs/{run.pk}/"]').count() == 1
    screenshot(page, f"request-detail-{width}")
    # No horizontal scrolling on the page itself (the table scrolls inside its box on a laptop, stacks on a phone).
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
