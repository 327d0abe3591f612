"""The billing page in headless Chromium: usage as an admin sees it, and an owner subscribing through (the local)
Stripe Checkout, then opening the customer portal."""

import re
import time
from typing import Any

import pytest
import requests

from billing.catalogue import sync_plans
from billing.models import OrgBilling, Plan
from saas.llm import gateway
from saas.llm.models import ModelConfig
from saas.llm.providers import ChatRequest
from saas.llm.registry import sync_registry
from tests.accounts.factories import MembershipFactory
from tests.billing.conftest import WEBHOOK_SECRET, stripe_env
from tests.browser.conftest import sign_in
from tests.conftest import running_daphne

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def test_the_billing_page_shows_usage_and_plans(browser, daphne_server, screenshot):
    sync_registry(ModelConfig)  # a flushed test database has lost the seeded registry and plans
    sync_plans(Plan)
    admin: Any = MembershipFactory(role="admin")
    caller = gateway.Caller(org=admin.organization, feature="chat")
    for n in range(170):  # 85% of the Free plan's 200
        gateway.chat(caller=caller, model="local", request=ChatRequest([{"role": "user", "content": f"Hi {n}"}]))
    page = browser.new_context(viewport={"width": 1100, "height": 800}).new_page()
    sign_in(page, daphne_server.url, admin.user.email)
    page.click("nav.orgnav >> text=Billing")
    page.wait_for_url(re.compile(r"/billing/$"))
    assert "170 of 200 included" in page.locator("#usage-line").inner_text()
    assert page.locator(".meter span.high").count() == 1  # past 80%: the meter turns amber
    assert page.locator("#stripe-missing").is_visible()
    screenshot(page, "40-billing")


@pytest.fixture(scope="module")
def daphne_with_stripe(django_db_setup, tmp_path_factory, fake_server, fake_stripe_server):
    with running_daphne(tmp_path_factory.mktemp("daphne-stripe"), fake_server, **stripe_env(fake_stripe_server)) as s:
        yield s


def test_an_owner_upgrades_through_checkout_then_manages_billing(browser, daphne_with_stripe, local_stripe,
                                                                 screenshot):  # fmt: skip
    sync_registry(ModelConfig)
    owner: Any = MembershipFactory(role="owner")
    org = owner.organization
    # Stripe posts its events (subscription, invoices) to the app's webhook, signed with the endpoint's secret.
    requests.post(f"{local_stripe.server.base_url}/_config/webhooks/crewdesk", timeout=10, data={
        "url": daphne_with_stripe.url + local_stripe.webhook_path, "secret": WEBHOOK_SECRET})  # fmt: skip
    page = browser.new_context(viewport={"width": 1100, "height": 900}).new_page()
    sign_in(page, daphne_with_stripe.url, owner.user.email)
    page.goto(f"{daphne_with_stripe.url}/o/{org.slug}/billing/")
    assert not page.locator("#stripe-missing").is_visible()
    screenshot(page, "41-billing-upgrade")

    page.locator("#plans tr", has_text="Pro").locator("button", has_text="Upgrade").click()
    page.wait_for_url(re.compile(r"/_config/checkout/cs_test_"))  # Stripe Checkout (the local one)
    page.click("#pay")
    page.wait_for_url(re.compile(r"/billing/\?checkout=done"))
    assert page.locator("#checkout-done").is_visible()
    for _ in range(30):  # the subscription arrives by webhook, a second or so after the payment
        if OrgBilling.objects.for_org(org).filter(status="active", plan__slug="pro").exists():
            break
        time.sleep(0.5)
    page.reload()
    screenshot(page, "42-billing-subscribed")
    assert "Pro plan · Active" in page.locator("#billing .badge").first.inner_text()
    page.locator("#invoices tbody tr").first.wait_for(timeout=10000)  # the first invoice, from its webhook
    screenshot(page, "42-billing-subscribed")

    page.click("#manage-billing")
    page.wait_for_url(re.compile(r"/_config/portal/bps_"))
    assert "customer portal" in page.content()
