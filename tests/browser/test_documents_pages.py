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
