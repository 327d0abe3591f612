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
    page.click("#start-form button[type=submit]")
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


ANSWER = (
    "Here is what the handbook says [1]:\n\n| Case | Days |\n|---|---|\n| Refunds | 30 |\n\n"
    "```python\ndef refund_days():\n    return 30\n```\n"
)


def _library(member):
    """A ready document in a collection named Policies (ingested here: no worker needed)."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from documents import ingestion
    from documents import services as documents
    from saas.core.tenancy import org_scope
    from tests.accounts.conftest import issue_key, key_client
    from tests.documents import files

    org = member.organization
    with org_scope(org):
        policies = documents.collection_create(org=org, name="Policies")
        documents.collection_create(org=org, name="Engineering")
    client = key_client(issue_key(org, scopes=["documents:write"]).secret)
    pdf = files.pdf(["Welcome to the Acme handbook.", "Refunds take 30 days from the purchase date."])
    response = client.post("/api/v1/documents", {"file": SimpleUploadedFile("handbook.pdf", pdf),
                                                 "collection": str(policies.pk)}, format="multipart")  # fmt: skip
    ingestion.document_ingest(org_id=org.pk, document_id=response.json()["id"])
    return policies


def test_a_grounded_conversation_renders_cites_and_survives_a_reload(browser, daphne_server, fake, models, screenshot):  # noqa: F811
    """Acceptance (#16): a member picks a collection (by "#" mention), gets a cited answer whose Markdown
    table and code render as HTML, reloads and finds it intact (no blank areas, the rating kept), then
    renames, pins and finds it by search."""
    from saas.llm.models import ModelConfig
    from saas.llm.registry import sync_registry

    sync_registry(ModelConfig)  # the local embedding model, beside the fake upstream's chat models
    member = MembershipFactory(role="member")
    _library(member)
    fake.script("fake-small", {"reply": ANSWER})
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    sign_in(page, daphne_server.url, member.user.email)
    page.click("nav.orgnav >> text=Chat")
    page.click("#start-form button[type=submit]")
    page.wait_for_url(re.compile(r"/chat/[0-9a-f-]+/$"))
    page.wait_for_function("() => document.querySelector('#live-status') !== null")

    page.select_option("#model", "test-small")
    page.click("#question")
    page.keyboard.type("#Pol")
    page.locator("#mentions li").filter(has_text="#Policies").wait_for()
    page.keyboard.press("Enter")  # picks the collection, sends nothing
    page.locator("#picked-summary").filter(has_text="Policies").wait_for()
    page.keyboard.type("How long do refunds take?")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("Answer briefly.")
    assert page.input_value("#question") == "How long do refunds take?\nAnswer briefly."
    page.keyboard.press("Enter")

    answer = page.locator(".turn.assistant").first
    answer.locator(".meta").wait_for(timeout=90000)  # the first grounded answer loads the embedding model
    assert answer.locator(".citations li").count() == 1, (answer.inner_html(), page.inner_text("#chat-error"))
    assert answer.locator(".md table td").first.inner_text() == "Refunds"
    code = answer.locator(".md pre.code")
    assert "    return 30" in code.inner_text()  # the indentation is kept
    assert page.inner_text("#chat-title") == "How long do refunds take?"  # titled from the first question, live
    shown = answer.locator(".text.md").inner_text()
    assert "```" not in shown and "|---|" not in shown and "[1]" in shown
    citation = answer.locator(".citations li").first
    assert "handbook.pdf" in citation.inner_text() and "Refunds take 30 days" in citation.inner_text()
    assert re.search(r"/documents/[0-9a-f-]+/#chunk-", citation.locator("a").first.get_attribute("href"))
    assert answer.locator("button.copy-code").count() == 1
    answer.locator("[data-rate=up]").click()
    page.wait_for_function("() => document.querySelector('.turn.assistant [data-rate=up].chosen') !== null")
    screenshot(page, "chat-grounded-1366")

    page.reload()
    page.wait_for_function("() => document.querySelector('#live-status') !== null")
    answer = page.locator(".turn.assistant").first
    assert answer.locator("[data-rate=up]").get_attribute("aria-pressed") == "true"
    assert "chosen" in answer.locator("[data-rate=up]").get_attribute("class")
    assert answer.locator(".md table").count() == 1 and answer.locator(".citations li").count() == 1
    question = page.locator(".turn.user .text").first
    assert question.inner_text() == "How long do refunds take?\nAnswer briefly."
    # No blank areas: each bubble is as tall as its content (one line of question is about one line high).
    heights = page.evaluate("""() => [...document.querySelectorAll('.turn.user')].map(li => {
        const text = li.querySelector('.text'); const line = parseFloat(getComputedStyle(text).lineHeight);
        return text.getBoundingClientRect().height / line; })""")
    assert heights and all(h < 2.6 for h in heights), heights  # two lines of question, no empty ones
    screenshot(page, "chat-reloaded-1366")

    page.click(".rename summary")
    page.fill("#rename-title", "Refund policy")
    page.click("#rename-form button[type=submit]")
    page.locator("#chat-title").filter(has_text="Refund policy").wait_for()
    page.click("#pin")
    page.locator("#conv-list li.current .pin").wait_for()
    page.fill("#conv-search", "refund")
    page.press("#conv-search", "Enter")
    page.wait_for_url(re.compile(r"\?q=refund"))
    assert page.locator("#conv-list li").count() == 1 and "Refund policy" in page.locator("#conv-list").inner_text()
    page.fill("#conv-search", "payroll")
    page.press("#conv-search", "Enter")
    page.locator("#conv-list li.empty").wait_for()

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(page.url.split("?")[0])
    page.wait_for_function("() => document.querySelector('#live-status') !== null")
    overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, overflow
    screenshot(page, "chat-grounded-390")
    context.close()
