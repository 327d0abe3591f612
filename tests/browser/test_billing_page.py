"""The billing page in headless Chromium, as an admin sees it after a few AI requests."""

import re
from typing import Any

import pytest

from billing.catalogue import sync_plans
from billing.models import Plan
from saas.llm import gateway
from saas.llm.models import ModelConfig
from saas.llm.providers import ChatRequest
from saas.llm.registry import sync_registry
from tests.accounts.factories import MembershipFactory

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def test_the_billing_page_shows_usage_and_plans(browser, daphne_server, screenshot):
    sync_registry(ModelConfig)  # a flushed test database has lost the seeded registry and plans
    sync_plans(Plan)
    admin: Any = MembershipFactory(role="admin")
    caller = gateway.Caller(org=admin.organization, feature="chat")
    for n in range(170):  # 85% of the Free plan's 200
        gateway.chat(caller=caller, model="local", request=ChatRequest([{"role": "user", "content": f"Hi {n}"}]))
    page = browser.new_context(viewport={"width": 1100, "height": 800}).new_page()
    page.goto(f"{daphne_server.url}/accounts/login/")
    page.fill("input[name=login]", admin.user.email)
    page.fill("input[name=password]", "correct horse battery staple")
    page.click("form button[type=submit]")
    page.wait_for_url(re.compile(r"/o/"))
    page.click("nav.orgnav >> text=Billing")
    page.wait_for_url(re.compile(r"/billing/$"))
    assert "170 of 200 included" in page.locator("#usage-line").inner_text()
    assert page.locator(".meter span.high").count() == 1  # past 80%: the meter turns amber
    assert page.locator("#stripe-missing").is_visible()
    screenshot(page, "40-billing")
