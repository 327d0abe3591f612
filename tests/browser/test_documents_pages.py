"""Documents in headless Chromium: upload by the file picker, watch the status go live to ready (a real Celery
worker ingests it), ask a question, and follow the citation to the passage on page 3."""

import re
from typing import Any

import pytest

from agents.models import Feedback
from documents.models import Document
from saas.llm.models import ModelConfig, OrgLLMSettings
from saas.llm.registry import sync_registry
from tests.accounts.factories import MembershipFactory
from tests.browser.conftest import sign_in
from tests.documents import files
from tests.documents.test_search_and_ask import HANDBOOK

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def test_upload_watch_ask_and_open_the_citation(browser, daphne_server, celery_worker_process, screenshot, tmp_path):
    sync_registry(ModelConfig)  # a flushed test database has lost the seeded registry
    member: Any = MembershipFactory(role="member")
    OrgLLMSettings(organization=member.organization, default_model="local").save()  # the offline engine
    handbook = tmp_path / "handbook.pdf"
    handbook.write_bytes(files.pdf(HANDBOOK))

    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    sign_in(page, daphne_server.url, member.user.email)
    page.click("nav.orgnav >> text=Documents")
    page.wait_for_url(re.compile(r"/documents/$"))
    page.wait_for_function("() => document.querySelector('#live-status').dataset.state === 'open'")
    screenshot(page, "10-documents-empty")

    page.set_input_files("#upload-input", str(handbook))
    row = page.locator("#document-table tbody tr").first
    row.locator(".status[data-status=ready]").wait_for(timeout=90000)  # pushed live, no reload
    assert row.locator(".chunks").inner_text() == str(Document.all_orgs.get().chunk_count)
    # The upload panel follows the document too: it says Ready, not "processing" (issue #16).
    state = page.locator("#upload-progress li .upload-state").first
    page.locator("#upload-progress li .upload-state[data-status=ready]").wait_for(timeout=10000)
    assert state.inner_text().strip() == f"Ready: {Document.all_orgs.get().chunk_count} chunks."
    screenshot(page, "11-documents-ready")

    refused = tmp_path / "program.bin"
    refused.write_bytes(b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 64)
    page.set_input_files("#upload-input", str(refused))
    page.locator("#upload-progress li.error").filter(has_text="Unsupported file type").wait_for(timeout=10000)

    page.click("nav.orgnav >> text=Ask")  # Ask: a conversation over the team's documents, kept and reopenable
    page.fill("#question", "How long do refunds take?")
    page.click("#send")
    page.wait_for_url(re.compile(r"/chat/[0-9a-f-]+/$"))
    answer = page.locator(".turn.assistant").first
    answer.locator(".meta").wait_for(timeout=30000)
    assert answer.locator(".citations li").count() >= 1, answer.inner_text()  # answered by the team default
    assert "Refunds take 30 days" in answer.locator(".text.md").inner_text()
    assert "page 3" in answer.locator(".citations li").first.inner_text()
    answer.locator("[data-rate=up]").click()
    page.wait_for_function("() => document.querySelector('.turn.assistant [data-rate=up].chosen') !== null")
    assert Feedback.all_orgs.get().rating == 1
    screenshot(page, "12-ask-answer")

    answer.locator(".citations li a").first.click()
    page.wait_for_url(re.compile(r"/documents/[0-9a-f-]+/#chunk-"))
    highlighted = page.locator(".chunk.highlight")
    assert "page 3" in highlighted.inner_text() and "Refunds take 30 days" in highlighted.inner_text()
    screenshot(page, "13-document-passage")
    context.close()


def test_the_documents_table_is_searched_and_paged_and_fits_a_phone(browser, daphne_server, screenshot):
    from saas.core import crypto
    from tests.documents.factories import ChunkFactory, CollectionFactory, DocumentFactory

    member: Any = MembershipFactory(role="member")
    org = member.organization
    collection = CollectionFactory(organization=org, name="Policies")
    for n in range(30):
        DocumentFactory(organization=org, collection=collection, title=f"Policy {n:02d}", chunk_count=3)
    DocumentFactory(organization=org, collection=collection, title="Travel guide with a rather long title, to wrap")
    text = "## Refunds\n\nRefunds take **30 days**.\n\n| Plan | Days |\n|---|---|\n| Pro | 30 |\n\n"
    text += "```python\nprint('hi')\n```"
    chunk = ChunkFactory(organization=org, document__collection=collection, document__title="Refund rules",
                         text_encrypted=crypto.encrypt(text))  # fmt: skip

    for width, height in [(1366, 900), (390, 844)]:
        page = browser.new_context(viewport={"width": width, "height": height}).new_page()
        sign_in(page, daphne_server.url, member.user.email)
        page.goto(f"{daphne_server.url}/o/{org.slug}/documents/")
        assert page.locator("#document-table tbody tr[data-document]").count() == 25
        assert page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 0
        screenshot(page, f"14-documents-{width}")
        page.fill("#document-search", "policy")
        page.click("form.table-search button[type=submit]")
        page.wait_for_url(re.compile(r"\?q=policy"))
        assert "Page 1 of 2 · 30 documents" in page.locator("nav.pager").inner_text()
        page.click("nav.pager a[rel=next]")
        page.wait_for_url(re.compile(r"q=policy&.*page=2"))  # the search is kept
        assert page.locator("#document-table tbody tr[data-document]").count() == 5
        assert "Travel guide" not in page.locator("#document-table").inner_text()
        screenshot(page, f"15-documents-search-page2-{width}")
        page.goto(f"{daphne_server.url}/o/{org.slug}/documents/{chunk.document_id}/")
        page.locator(".chunk .md strong").wait_for()  # the passage's Markdown, rendered
        assert page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 0
        screenshot(page, f"16-document-detail-{width}")
        page.context.close()
