"""The chat page in headless Chromium: ask, watch the answer stream in, stop a slow one, rate an answer."""

import re

import pytest

from agents.models import Feedback, Message
from tests.accounts.factories import MembershipFactory
from tests.browser.conftest import sign_in
from tests.llm.conftest import fake, models  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def test_chat_streams_stops_and_takes_feedback(browser, daphne_server, fake, models, screenshot):  # noqa: F811
    member = MembershipFactory(role="member")
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    sign_in(page, daphne_server.url, member.user.email)
    page.click("nav.orgnav >> text=Chat")
    page.click("text=New conversation")
    page.wait_for_url(re.compile(r"/chat/[0-9a-f-]+/$"))
    page.wait_for_function("() => document.querySelector('#live-status') !== null")

    page.select_option("#model", "test-small")
    page.fill("#question", "Tell me about foxes")
    page.click("#send")
    answer = page.locator(".turn.assistant").first
    answer.locator(".meta").wait_for(timeout=15000)
    assert answer.locator(".text").inner_text() == "The quick brown fox jumps over the lazy dog."
    screenshot(page, "07-chat")

    fake.config(token_rate=3)
    page.fill("#question", "And slowly?")
    page.click("#send")
    slow = page.locator(".turn.assistant").nth(1)
    slow.locator(".text").filter(has_text=re.compile(r"\w")).wait_for(timeout=15000)
    page.click("#stop")
    slow.locator(".meta").wait_for(timeout=15000)
    assert "stopped" in slow.locator(".meta").inner_text()
    assert len(slow.locator(".text").inner_text()) < len("The quick brown fox jumps over the lazy dog.")
    screenshot(page, "08-chat-stopped")

    answer.locator("[data-rate=up]").click()
    page.wait_for_function("() => document.querySelector('.turn.assistant [data-rate=up].chosen') !== null")
    first = Message.all_orgs.filter(role="assistant").order_by("created_at").first()
    assert Feedback.all_orgs.get(message=first).rating == 1
    context.close()
