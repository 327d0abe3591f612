"""The Insights dashboards in headless Chromium, at a laptop's and a phone's width, light and dark: reached from
the navigation, every chart drawn with the team's data, the range picker (a preset, then a bad custom range that
says what to fix)."""

import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from analytics import rollups
from saas.core import crypto
from saas.llm.models import LLMCall
from tests.accounts.factories import MembershipFactory
from tests.agents.factories import FeedbackFactory
from tests.browser.conftest import sign_in
from tests.llm.factories import LLMCallFactory

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def _ledger(org: Any) -> None:
    now = timezone.now()
    made = []
    for hours_ago in range(0, 23):
        for n in range(1 + hours_ago % 4):
            failed = (hours_ago + n) % 7 == 0
            made.append(LLMCallFactory(
                organization=org, feature=("ask", "chat", "generate")[n % 3],
                model_used=("gpt-4o-mini", "claude-haiku")[hours_ago % 2],
                status="error" if failed else "ok", error_class=("timeout", "rate_limited")[n % 2] if failed else "",
                latency_ms=300 + 97 * ((hours_ago * 7 + n * 13) % 40), ttft_ms=None if failed else 80 + 11 * n,
                prompt_tokens=400 + 10 * n, completion_tokens=90, cost_usd=Decimal("0.0012") * (1 + n),
                cache="exact" if n == 2 else "miss", cost_saved_usd=Decimal("0.002") if n == 2 else 0,
                groundedness=(1.0, 0.8, 0.35)[hours_ago % 3] if n % 3 == 0 and not failed else None,
                input_encrypted=crypto.encrypt('[{"role": "user", "content": "How long do refunds take?"}]'
                                               if failed or hours_ago % 3 == 2 else
                                               '[{"role": "user", "content": "Where can staff park?"}]'),
            ))  # fmt: skip
            LLMCall.all_orgs.filter(pk=made[-1].pk).update(created_at=now - timedelta(hours=hours_ago, minutes=n))
    for call in made[::5]:
        FeedbackFactory(organization=org, llm_call=call, message=None, rating=-1 if call.status == "error" else 1)
    rollups.rollup_hours(org_ids=[org.pk])


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_dashboards_draw_the_teams_data_at_both_widths(browser, daphne_server, screenshot, scheme):
    admin: Any = MembershipFactory(role="admin", organization__name="Northwind")
    org = admin.organization
    _ledger(org)
    for width, height in ((1366, 900), (390, 844)):
        context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=scheme)
        page = context.new_page()
        problems: list[str] = []
        page.on("console", lambda m, problems=problems: m.type == "error" and problems.append(m.text))
        sign_in(page, daphne_server.url, admin.user.email)
        if width < 600:
            page.click("#menu-toggle")  # the phone's Menu holds the navigation
        page.click("nav.orgnav >> text=Insights")
        page.wait_for_url(re.compile(r"/insights/$"))
        assert page.locator("nav.orgnav a[aria-current=page]").inner_text() == "Insights"
        # Every chart drawn with data: bars with a height, the latency lines with their points.
        for chart in ("requests", "errors", "tokens", "cost", "cache", "groundedness"):
            figure = page.locator(f'[data-chart="chart-{chart}"]')
            assert figure.get_attribute("data-has-data") == "true", chart
            heights = [
                float(h)
                for h in figure.locator("rect.bar").evaluate_all("els => els.map(e => e.getAttribute('height'))")
            ]
            assert any(h > 0 for h in heights), chart
        assert page.locator('[data-chart="chart-latency"] circle').count() >= 6  # 7 days: 2 with calls, 3 lines
        tiles = page.locator("#insight-tiles").inner_text()
        assert "Requests" in tiles and "Error rate" in tiles
        assert "How long do refunds take?" in page.locator("#failing-questions").inner_text()
        assert page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 0
        screenshot(page, f"insights-{width}-{scheme}")
        # A preset, then a custom range with the end before the start: a 400 page that says so.
        page.click("text=Last 24 hours")
        page.wait_for_url(re.compile(r"range=24h"))
        assert page.locator(".presets a[aria-current=page]").inner_text() == "Last 24 hours"
        assert "Requests per hour" in page.locator('[data-chart="chart-requests"] figcaption').inner_text()
        assert page.locator('[data-chart="chart-latency"] circle').count() > 40  # 23 hours with calls
        screenshot(page, f"insights-{width}-{scheme}-24h")
        page.fill("input[name=start]", "2026-11-10")
        page.fill("input[name=end]", "2026-11-01")
        page.click(".range-picker button[type=submit]")
        page.wait_for_url(re.compile(r"start=2026-11-10"))
        assert "The end date is before the start date." in page.locator("#range-error").inner_text()
        if width == 390:
            screenshot(page, f"insights-{width}-{scheme}-bad-range")
        assert problems in ([], ["Failed to load resource: the server responded with a status of 400 (Bad Request)"])
        context.close()
