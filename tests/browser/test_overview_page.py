"""The Overview in headless Chromium, as a new team meets it: the getting-started checklist, the sample
documents loaded in one click and read by a real Celery worker (the activity says so live, in words), the
usage charts drawn with data on the Overview and on Billing, and the notification bell counting live. Every
page this slice owns is then taken at 1366 and 390 px wide, and none may scroll sideways."""

import re
import threading
from typing import Any

import pytest

from accounts import services
from documents.models import Document
from saas.llm import gateway
from saas.llm.models import ModelConfig, OrgLLMSettings
from saas.llm.providers import ChatRequest
from saas.llm.registry import sync_registry
from tests.accounts.conftest import issue_key
from tests.accounts.factories import MembershipFactory
from tests.browser.conftest import sign_in

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def _notify(org, title: str, url: str = "") -> None:
    """notify_members pushes to the socket through async_to_sync, which refuses Playwright's thread."""
    thread = threading.Thread(target=services.notify_members, kwargs={"org": org, "title": title, "url": url})
    thread.start()
    thread.join()


NO_SIDEWAYS = "() => document.documentElement.scrollWidth <= window.innerWidth"
WIDE = """() => [...document.querySelectorAll("body *")]
  .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
  .slice(0, 5).map(e => e.tagName + "." + e.className + "#" + e.id)"""


def _bars_with_height(page, chart: str) -> int:
    return page.eval_on_selector_all(
        f'[data-chart="{chart}"] svg rect.bar',
        "bars => bars.filter(b => parseFloat(b.getAttribute('height')) > 0).length",
    )


def test_a_new_team_follows_the_checklist_with_the_samples_and_sees_charts_and_the_bell(
    browser, daphne_server, celery_worker_process, screenshot
):
    sync_registry(ModelConfig)  # a flushed test database has lost the seeded registry
    owner: Any = MembershipFactory(role="owner")
    org = owner.organization
    OrgLLMSettings(organization=org, default_model="local").save()  # the offline engine
    page = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()
    sign_in(page, daphne_server.url, owner.user.email)
    assert page.locator("#checklist").is_visible()
    assert page.locator("#checklist-progress").inner_text() == "0 of 5 done"
    assert page.locator('[data-step="upload"]').get_attribute("data-done") == "false"
    page.wait_for_function("() => document.querySelector('#live-status').dataset.state === 'open'")
    screenshot(page, "60-overview-new-team")

    page.click("#load-samples")
    page.wait_for_url(re.compile(rf"/o/{org.slug}/$"))
    assert page.locator('[data-step="upload"]').get_attribute("data-done") == "true"
    page.wait_for_function("() => document.querySelector('#live-status').dataset.state === 'open'")
    # The worker reads both samples; the activity list says so as it happens, without a reload.
    ready = page.locator("#activity-list li[data-state=ready]")
    ready.nth(1).wait_for(timeout=120000)
    handbook = Document.all_orgs.get(organization=org, filename="handbook.md")
    assert (
        page.locator("#activity-list")
        .get_by_text(f"Northwind Studio: Team Handbook is ready: {handbook.chunk_count} passages")
        .is_visible()
    )
    assert "document.progress" not in page.content()

    # Some usage: the charts draw it, on the Overview and on Billing.
    caller = gateway.Caller(org=org, feature="chat", user=owner.user)
    for n in range(6):
        gateway.chat(caller=caller, model="local", request=ChatRequest([{"role": "user", "content": f"Hi {n}"}]))
    issue_key(org, name="CI")
    page.reload()
    assert page.locator("#checklist-progress").inner_text() == "2 of 5 done"  # upload and the key
    assert _bars_with_height(page, "chart-requests") >= 1
    assert page.locator('[data-breakdown="feature"]').get_by_text("chat").is_visible()
    screenshot(page, "61-overview-samples-ready")
    page.click("nav.orgnav >> text=Billing")
    page.wait_for_url(re.compile(r"/billing/$"))
    assert _bars_with_height(page, "chart-requests") >= 1
    assert page.locator('[data-breakdown="member"]').get_by_text(owner.user.email).is_visible()
    screenshot(page, "62-billing-charts")

    # The bell counts a new notification live, lists it, and marks everything read.
    page.goto(f"{daphne_server.url}/o/{org.slug}/")
    page.wait_for_function("() => document.querySelector('#live-status').dataset.state === 'open'")
    assert page.locator("#bell-count").is_hidden()
    _notify(org, "Scheduled run of Digest finished", f"/o/{org.slug}/crews/")
    page.locator("#bell-count").filter(has_text="1").wait_for(timeout=30000)
    page.click("#bell summary")
    assert page.locator("#bell .bell-list").get_by_text("Scheduled run of Digest finished").is_visible()
    screenshot(page, "63-bell-open")
    page.click("#bell-read-all")
    page.wait_for_url(re.compile(rf"/o/{org.slug}/$"))
    assert page.locator("#bell-count").is_hidden()


def test_the_slices_pages_fit_at_1366_and_390(browser, daphne_server, screenshot):
    sync_registry(ModelConfig)
    owner: Any = MembershipFactory(role="owner")
    org = owner.organization
    for n in range(3):
        MembershipFactory(organization=org)
        issue_key(org, name=f"script {n}")
    _notify(org, "Your team's export is ready to download", "/account/privacy/")
    caller = gateway.Caller(org=org, feature="ask", user=owner.user)
    gateway.chat(caller=caller, model="local", request=ChatRequest([{"role": "user", "content": "Hi"}]))
    pages = {"overview": "", "billing": "billing/", "members": "members/", "keys": "keys/", "audit": "audit/",
             "notifications": "notifications/"}  # fmt: skip
    for width, height in ((1366, 900), (390, 844)):
        page = browser.new_context(viewport={"width": width, "height": height}).new_page()
        sign_in(page, daphne_server.url, owner.user.email)
        for name, path in pages.items():
            response = page.goto(f"{daphne_server.url}/o/{org.slug}/{path}")
            assert response is not None and response.status == 200, name
            assert page.evaluate(NO_SIDEWAYS), f"{name} scrolls sideways at {width} px: {page.evaluate(WIDE)}"
            screenshot(page, f"7{list(pages).index(name)}-{name}-{width}")
        page.click("#bell summary")
        assert page.locator("#bell .bell-panel").is_visible()
        assert page.evaluate(NO_SIDEWAYS), f"the open bell scrolls sideways at {width} px"
        screenshot(page, f"79-bell-{width}")
        page.context.close()
