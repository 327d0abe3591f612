"""A tour of the main pages under the Content-Security-Policy, on a laptop and on a phone: each keeps its
stylesheet, its scripts run (the live socket opens, meters fill, delete asks first), the API docs and the admin
work, and the browser refuses nothing (tests/browser/conftest.py fails the test on any refusal)."""

import re
from typing import Any

import pytest

from documents.models import Document
from saas.llm.models import ModelConfig
from saas.llm.registry import sync_registry
from tests.accounts.factories import ApiKeyFactory, InvitationFactory, MembershipFactory, UserFactory
from tests.agents.factories import ConversationFactory, CrewFactory, MessageFactory, RunFactory, RunStepFactory
from tests.browser.conftest import sign_in
from tests.documents.factories import ChunkFactory, DocumentFactory

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

STYLED = "() => getComputedStyle(document.body).margin === '0px'"  # app.css, swagger.css and the admin's say so


def test_the_main_pages_keep_their_style_and_behaviour_under_the_csp(browser, daphne_server, screenshot):
    sync_registry(ModelConfig)
    owner: Any = MembershipFactory(role="owner", user=UserFactory(is_staff=True, is_superuser=True))
    org = owner.organization
    conversation = ConversationFactory(organization=org, user=owner.user, title="Refund policy")
    MessageFactory(organization=org, conversation=conversation)
    crew = CrewFactory(organization=org)
    run = RunFactory(organization=org, crew=crew)
    RunStepFactory(organization=org, run=run)
    document = DocumentFactory(organization=org)
    ChunkFactory(organization=org, document=document)
    ApiKeyFactory(organization=org)
    InvitationFactory(organization=org)
    o = f"/o/{org.slug}"
    pages = {
        "dashboard": f"{o}/",
        "documents": f"{o}/documents/",
        "document": f"{o}/documents/{document.id}/",
        "ask": f"{o}/ask/",
        "chats": f"{o}/chat/",
        "chat": f"{o}/chat/{conversation.id}/",
        "crews": f"{o}/crews/",
        "crew": f"{o}/crews/{crew.id}/",
        "crew-builder": f"{o}/crews/new/",
        "run": f"{o}/runs/{run.id}/",
        "members": f"{o}/members/",
        "api-keys": f"{o}/keys/",
        "audit": f"{o}/audit/",
        "billing": f"{o}/billing/",
        "settings": f"{o}/settings/",
        "your-data": "/account/privacy/",
        "privacy-notice": "/privacy/",
        "two-factor": "/accounts/2fa/",
        "emails": "/accounts/email/",
        "not-found": f"{o}/no-such-page/",
        "api-docs": "/api/docs/",
        "admin": "/admin/",
        "admin-users": "/admin/accounts/user/",
        "admin-user": f"/admin/accounts/user/{owner.user.pk}/change/",
    }
    for width, height in ((1366, 900), (390, 844)):
        context = browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        sign_in(page, daphne_server.url, owner.user.email)
        for name, path in pages.items():
            page.goto(daphne_server.url + path)
            page.wait_for_function(STYLED)
            if not path.startswith(("/admin/", "/api/")):
                # connect-src 'self' lets the page's websocket through (ws: on this http origin)
                page.wait_for_function("() => document.querySelector('#live-status').dataset.state === 'open'")
            if name == "api-docs":
                page.locator(".opblock").first.wait_for(timeout=30000)  # Swagger UI built the operations
            if name == "billing":
                assert page.eval_on_selector(".meter span", "bar => bar.style.width") == "0%"
            screenshot(page, f"tour-{width}-{name}")
        context.close()

    # The document's Delete asks first (page.js, not an onsubmit= attribute): Cancel keeps it, OK deletes it.
    page = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()
    sign_in(page, daphne_server.url, owner.user.email)
    page.goto(f"{daphne_server.url}{o}/documents/{document.id}/")
    asked: list[str] = []

    def cancel(dialog) -> None:
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", cancel)
    page.click("form[data-confirm] button")
    page.wait_for_timeout(500)
    assert asked == ["Delete this document, its chunks and its file?"]
    assert Document.all_orgs.filter(pk=document.pk).exists()
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("form[data-confirm] button")
    page.wait_for_url(re.compile(r"/documents/$"))
    assert not Document.all_orgs.filter(pk=document.pk).exists()
