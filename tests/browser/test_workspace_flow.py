"""Acceptance (#16), in headless Chromium against a real daphne and a real Celery worker, offline: a new user
signs up, follows the checklist with the sample documents, asks in chat with a collection and gets cited,
rendered answers, reloads and finds the conversation intact. On the way: the title is summarised from the
first exchange and shows up live, the sidebar renames and pins in place, and the checklist ticks the question."""

import re

import pytest

from saas.llm.models import ModelConfig
from saas.llm.registry import sync_registry
from tests.browser.test_org_flow import _confirm_address, _sign_up

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

QUESTION = "Hi! I just joined Northwind. How many holiday days do we get each year?"
NO_SIDEWAYS = "() => document.documentElement.scrollWidth <= window.innerWidth"
OPEN = "() => document.querySelector('#live-status').dataset.state === 'open'"


def test_a_new_user_follows_the_checklist_and_asks_the_samples_in_chat(
    browser, daphne_server, celery_worker_process, screenshot
):
    sync_registry(ModelConfig)  # a flushed test database has lost the seeded registry
    context = browser.new_context(
        viewport={"width": 1366, "height": 900}, permissions=["clipboard-read", "clipboard-write"]
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    # Sign up; the link in the confirmation email lands on the new team's Overview and its checklist.
    _sign_up(page, daphne_server, "newcomer@example.com")
    _confirm_address(page, daphne_server, "newcomer@example.com")
    page.wait_for_url(re.compile(r"/o/[\w-]+/$"))
    slug = page.url.rstrip("/").split("/")[-1]
    assert page.locator("#checklist-progress").inner_text() == "0 of 5 done"

    # Step 1 with the samples: loaded in one click, read by the worker (the activity says so, live).
    page.click("#load-samples")
    page.wait_for_url(re.compile(rf"/o/{slug}/$"))
    page.wait_for_function(OPEN)
    page.locator("#activity-list li[data-state=ready]").nth(1).wait_for(timeout=180000)
    assert page.locator('[data-step="upload"]').get_attribute("data-done") == "true"

    # Step 2: "Ask it a question" opens Ask, every collection picked; the offline engine answers.
    page.click('[data-step="ask"] a')
    page.wait_for_url(re.compile(rf"/o/{slug}/ask/$"))
    samples = page.locator("#start-form input[name=collections]")
    assert samples.count() == 1 and samples.first.is_checked() and samples.first.get_attribute("data-name") == "Samples"
    page.select_option("#model", "local")
    page.fill("#question", QUESTION)
    page.press("#question", "Enter")  # Enter sends
    page.wait_for_url(re.compile(rf"/o/{slug}/chat/[0-9a-f-]+/$"))
    conversation_url = page.url

    answer = page.locator(".turn.assistant").first
    answer.locator(".meta").wait_for(timeout=120000)  # the first answer loads the embedding model
    assert "offline extractive engine" in answer.locator(".meta").inner_text()
    citations = answer.locator(".citations > li")
    assert citations.count() >= 1, answer.inner_html()
    assert "Team Handbook" in citations.first.inner_text()
    assert "27 working days" in answer.locator(".text.md").inner_text()
    # Rendered, not raw: the handbook's **bold** is bold, the markers are links to their citations.
    assert answer.locator(".text.md strong").count() >= 1 and "**" not in answer.locator(".text.md").inner_text()
    marker = answer.locator(".text.md a.cite").first
    assert re.fullmatch(r"#cite-[0-9a-f-]+-\d+", marker.get_attribute("href"))
    assert answer.locator(".citations .passage").count() == citations.count()

    # The title: the first question's words at once, then the summary of the first exchange (the worker asks
    # the gateway; the offline engine picks the question's own question), pushed to the page live.
    page.locator("#chat-title").filter(has_text=re.compile(r"^How many holiday days do we get each year\?$")).wait_for(
        timeout=120000
    )
    current = page.locator("#conv-list li.current")
    assert current.locator(".conv-title").inner_text() == "How many holiday days do we get each year?"
    page.wait_for_timeout(300)  # let the last frames settle before the picture
    screenshot(page, "workspace-flow-answer-1366")

    # Reload: everything is still there, rendered the same.
    page.reload()
    page.wait_for_function(OPEN)
    assert page.url == conversation_url
    assert page.locator(".turn.user .text").first.inner_text() == QUESTION
    answer = page.locator(".turn.assistant").first
    assert answer.locator(".citations > li").count() == citations.count()
    assert answer.locator(".text.md strong").count() >= 1 and answer.locator(".text.md a.cite").count() >= 1
    assert page.inner_text("#chat-title") == "How many holiday days do we get each year?"

    # The sidebar renames and pins in place (no reload: the page keeps a marker).
    page.evaluate("window.__sameDocument = true")
    current = page.locator("#conv-list li.current")
    current.locator("summary").click()
    current.locator("input[name=title]").fill("Holiday allowance")
    current.locator("input[name=title]").press("Enter")
    page.locator("#chat-title").filter(has_text="Holiday allowance").wait_for()
    assert current.locator(".conv-title").inner_text() == "Holiday allowance"
    current.locator("summary").click()
    screenshot(page, "workspace-flow-menu-1366")
    current.get_by_role("button", name="Pin").click()
    current.locator(".pin").wait_for()
    assert page.evaluate("window.__sameDocument") is True
    screenshot(page, "workspace-flow-1366")

    # Copy an answer; regenerate it; edit the question and resend it: one exchange each time, the title kept.
    answer = page.locator(".turn.assistant").first
    answer.get_by_role("button", name="Copy").click()
    answer.get_by_role("button", name="Copied").wait_for()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert "27 working days" in copied and copied == answer.locator("pre.raw").text_content().strip()
    first_id = answer.get_attribute("data-message")
    answer.get_by_role("button", name="Regenerate").click()
    regenerated = page.locator(f'.turn.assistant:not([data-message="{first_id}"]) .meta')
    try:
        regenerated.wait_for(timeout=180000)
    except Exception as exc:
        said = page.inner_text("#chat-error")
        raise AssertionError(f"no new answer: {said!r} {errors} {page.inner_html('#turns')}") from exc
    assert page.locator(".turn").count() == 2 and "27 working days" in page.inner_text(".turn.assistant .text.md")
    page.locator(".turn.user").get_by_role("button", name="Edit").click()
    assert page.input_value("#question") == QUESTION
    page.fill("#question", "How much may a hotel night cost?")
    page.press("#question", "Enter")
    page.locator(".turn.user .text").filter(has_text="hotel night").wait_for()
    page.locator(".turn.assistant .meta").wait_for(timeout=180000)
    edited = page.locator(".turn.assistant")
    assert page.locator(".turn").count() == 2 and edited.get_attribute("data-message") not in (first_id, None)
    assert edited.locator(".citations > li").count() >= 1
    assert page.inner_text("#chat-title") == "Holiday allowance"  # renamed: a new first exchange keeps it

    # Back on the Overview, the checklist has ticked the question.
    page.click("nav.orgnav >> text=Overview")
    assert page.locator('[data-step="ask"]').get_attribute("data-done") == "true"

    # On a phone: the conversation fits, and is the same.
    phone = browser.new_context(viewport={"width": 390, "height": 844})
    phone.add_cookies(page.context.cookies())
    small = phone.new_page()
    small.goto(conversation_url)
    small.wait_for_function(OPEN)
    assert small.evaluate(NO_SIDEWAYS)
    assert small.inner_text("#chat-title") == "Holiday allowance"
    assert small.locator(".turn.user .text").inner_text() == "How much may a hotel night cost?"
    screenshot(small, "workspace-flow-390")
    assert not errors, errors
    phone.close()
    context.close()
