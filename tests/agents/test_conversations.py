"""The chat workspace: conversations grounded in collections (the same retrieval and citations as Ask), the
answers rendered as sanitised Markdown, a reloaded conversation intact, and the sidebar's operations, all
scoped to the member and their org. Through the offline engine (no upstream) and real ingestion."""

import re
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from agents import conversations, services
from agents.models import Conversation, Feedback, Message
from documents import ingestion
from documents import services as documents
from documents.models import Collection
from saas.core import crypto
from saas.core.errors import NotFound
from saas.core.tenancy import org_scope
from saas.llm import gateway
from saas.llm.models import ModelConfig
from saas.llm.registry import sync_registry
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import MembershipFactory
from tests.documents import files

pytestmark = pytest.mark.django_db

HANDBOOK = [
    "Welcome to the Acme handbook. It explains how the company works.",
    "Travel expenses are reimbursed within 14 days of the trip report.",
    "Refunds take 30 days from the purchase date. Customers receive an email when the refund is sent.",
]
HOSTILE = "<script>alert(1)</script> [click](javascript:alert(2)) <img src=x onerror=alert(3)>"


def _upload(org, name: str, data: bytes, collection: Collection | None = None) -> None:
    client = key_client(issue_key(org, scopes=["read", "ask", "documents:write"]).secret)
    body: dict[str, Any] = {"file": SimpleUploadedFile(name, data)}
    if collection is not None:
        body["collection"] = str(collection.pk)
    response = client.post("/api/v1/documents", body, format="multipart")
    assert response.status_code == 202, response.content
    ingestion.document_ingest(org_id=org.pk, document_id=response.json()["id"])


@pytest.fixture
def member():
    sync_registry(ModelConfig)  # a flushed (transactional) test database has lost the seeded registry
    return MembershipFactory(role="member")


@pytest.fixture
def policies(member):
    org = member.organization
    with org_scope(org):
        policies = documents.collection_create(org=org, name="Policies")
    _upload(org, "handbook.pdf", files.pdf(HANDBOOK), policies)
    return policies


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _ask(conversation: Conversation, question: str, replace=None) -> list[dict]:
    with org_scope(conversation.organization):
        if replace is not None:
            conversations.turn_replace(conversation=conversation, message_id=replace)
        _, answer = services.chat_turn_start(conversation=conversation, question=question, model=conversation.model)
        caller = gateway.Caller(org=conversation.organization, feature="chat", user=conversation.user)
        return list(conversations.answer_stream(conversation=conversation, answer=answer, caller=caller,
                                                should_stop=lambda: False))  # fmt: skip


def _start(member, collections=()) -> Conversation:
    with org_scope(member.organization):
        return conversations.conversation_start(org=member.organization, user=member.user,
                                                collection_ids=[c.pk for c in collections])  # fmt: skip


@pytest.mark.django_db(transaction=True)  # the gateway records its call on a connection of its own
class TestGroundedAnswers:
    def test_an_answer_from_a_picked_collection_cites_the_passage(self, member, policies):
        conversation = _start(member, [policies])
        events = _ask(conversation, "How long do refunds take?")
        done = events[-1]
        assert done["type"] == "done" and done["status"] == "complete", events
        answer = Message.all_orgs.get(pk=done["message"])
        assert "Refunds take 30 days" in services.message_text(answer)
        cited = answer.citations
        assert cited and cited[0]["title"] == "handbook.pdf" and cited[0]["page"] == 3
        assert "Refunds take 30 days" in cited[0]["quote"]
        # The citations are document text: encrypted at rest like the passages.
        assert "Refunds" not in answer.citations_encrypted
        # The rendered turn links the marker to the citation, and the citation to the passage on its page.
        html = done["html"]
        assert f'href="#cite-{answer.pk}-1"' in html
        slug, chunk = member.organization.slug, cited[0]["chunk_id"]
        assert re.search(rf'href="/o/{slug}/documents/[0-9a-f-]+/#chunk-{chunk}"', html)
        assert "<blockquote" in html and "handbook.pdf" in html

    def test_the_offline_engine_is_not_a_dead_end(self, member, policies):
        """Finding: chat could not see the team's documents, so the default engine answered every question
        with "I could not find anything in the provided context". With no collection picked and only the
        offline engine, the answer draws on all the team's documents."""
        conversation = _start(member)
        assert conversations.answers_locally(org=member.organization, model="auto")
        events = _ask(conversation, "How long do refunds take?")
        answer = Message.all_orgs.get(pk=events[-1]["message"])
        text = services.message_text(answer)
        assert "could not find anything" not in text and "Refunds take 30 days" in text
        assert answer.citations

    def test_a_follow_up_is_asked_in_context(self, member, policies):
        conversation = _start(member, [policies])
        _ask(conversation, "How long do refunds take?")
        events = _ask(conversation, "And is an email sent?")
        text = services.message_text(Message.all_orgs.get(pk=events[-1]["message"]))
        assert "email" in text

    def test_another_orgs_collection_cannot_be_picked(self, member, policies):
        stranger = MembershipFactory(role="member")
        conversation = _start(stranger)
        with org_scope(stranger.organization):
            with pytest.raises(NotFound):
                conversations.conversation_update(conversation=conversation, collection_ids=[policies.pk], title="x")
            conversation.refresh_from_db()
            assert conversation.collections.count() == 0 and conversation.title == ""  # nothing half-written


class TestRendering:
    def _stored(self, member, text: str, citations=None) -> Conversation:
        conversation = _start(member)
        org = member.organization
        Message.all_orgs.create(organization=org, conversation=conversation, role="user",
                                content_encrypted=crypto.encrypt("Show me"))  # fmt: skip
        answer = Message.all_orgs.create(organization=org, conversation=conversation, role="assistant",
                                         content_encrypted=crypto.encrypt(text), model="local")  # fmt: skip
        if citations:
            answer.citations = citations
            answer.save()
        return conversation

    def test_markdown_tables_and_code_render_as_html(self, member):
        text = "**Plan**\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\ndef f():\n    return 1\n```\n"
        conversation = self._stored(member, text)
        page = _client(member.user).get(f"/o/{member.organization.slug}/chat/{conversation.pk}/").content.decode()
        assert "<strong>Plan</strong>" in page and "<table>" in page and "<td>1</td>" in page
        assert '<pre class="code"><code class="language-python">' in page
        assert "\n    " in page.split('language-python">')[1].split("</code>")[0]  # the indentation is kept
        assert "**Plan**" not in page.split('id="turns"')[1].split('class="raw"')[0]

    def test_hostile_markdown_in_an_answer_or_a_passage_cannot_inject_script(self, member):
        passage = {
            "marker": 1,
            "chunk_id": "c",
            "document_id": "00000000-0000-0000-0000-000000000001",
            "title": "<b>evil</b>.pdf",
            "page": None,
            "heading": "",
            "flagged": False,
            "quote": HOSTILE,
        }
        conversation = self._stored(member, HOSTILE + " [1]", [passage])
        page = _client(member.user).get(f"/o/{member.organization.slug}/chat/{conversation.pk}/").content.decode()
        turns = page.split('id="turns"')[1].split('id="ask"')[0]
        api = _client(member.user).get(f"/api/v1/conversations/{conversation.pk}").json()
        for html in (turns, api["messages"][1]["html"]):
            assert "&lt;script&gt;alert(1)" in html  # shown as text
            assert not re.search(r"<script|<img|href=\"?javascript:|<[^>]*\son\w+=", html, re.I), html
        assert "<b>evil</b>" not in turns and "&lt;b&gt;evil&lt;/b&gt;.pdf" in turns

    def test_a_reloaded_conversation_has_no_blank_areas_and_keeps_the_feedback(self, member):
        """Finding: every bubble had large blank areas (pre-wrap over the template's whitespace), and the
        Good/Bad choice disappeared on reload."""
        conversation = self._stored(member, "Refunds take 30 days.")
        answer = Message.all_orgs.get(conversation=conversation, role="assistant")
        Feedback.all_orgs.create(organization=member.organization, message=answer, user=member.user, rating=1)
        page = _client(member.user).get(f"/o/{member.organization.slug}/chat/{conversation.pk}/").content.decode()
        question = re.search(r'<div class="text plain"[^>]*>(.*?)</div>', page, re.S)
        assert question and question.group(1) == "Show me"  # no whitespace around the text it keeps
        assert '<div class="text md"><p>Refunds take 30 days.</p></div>' in page
        assert 'class="small chosen" data-rate="up" aria-pressed="true"' in page
        assert 'data-rate="down" aria-pressed="false"' in page


class TestWorkspace:
    def test_rename_pin_search_and_delete_through_the_api(self, member, policies):
        client = _client(member.user)
        created = client.post("/api/v1/conversations", {"collections": [str(policies.pk)]},
                              content_type="application/json")  # fmt: skip
        assert created.status_code == 201 and created.json()["collections"][0]["name"] == "Policies"
        pk = created.json()["id"]
        _start(member)  # another, unpinned
        patched = client.patch(f"/api/v1/conversations/{pk}", {"title": "Refund policy", "pinned": True},
                               content_type="application/json")  # fmt: skip
        assert patched.status_code == 200 and patched.json()["pinned"] is True
        listed = client.get("/api/v1/conversations").json()["results"]
        assert listed[0]["id"] == pk and len(listed) == 2  # pinned first
        assert [c["id"] for c in client.get("/api/v1/conversations?q=refund").json()["results"]] == [pk]
        bad = client.patch(f"/api/v1/conversations/{pk}", {"title": "  "}, content_type="application/json")
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid"
        assert client.delete(f"/api/v1/conversations/{pk}").status_code == 204
        assert not Conversation.all_orgs.filter(pk=pk).exists()

    def test_pages_rename_pin_search_and_delete(self, member):
        client = _client(member.user)
        slug = member.organization.slug
        conversation = _start(member)
        base = f"/o/{slug}/chat/{conversation.pk}/"
        assert client.post(base + "rename/", {"title": "Travel questions"}).url == base
        # The sidebar's forms come back to the page they were on, never to another site or team.
        index = f"/o/{slug}/chat/?q=travel"
        assert client.post(base + "pin/", {"pinned": "1", "next": index}).url == index
        for elsewhere in ("https://evil.example/", "//evil.example/o/x/", f"/o/not-{slug}/chat/"):
            assert client.post(base + "pin/", {"pinned": "1", "next": elsewhere}).url == base
        conversation.refresh_from_db()
        assert conversation.title == "Travel questions" and conversation.pinned
        assert conversation.title_source == "user"  # a summary will never replace it
        assert "Travel questions" in client.get(f"/o/{slug}/chat/?q=travel").content.decode()
        assert "Travel questions" not in client.get(f"/o/{slug}/chat/?q=payroll").content.decode()
        assert client.post(base + "delete/").status_code == 302
        assert not Conversation.all_orgs.filter(pk=conversation.pk).exists()

    def test_ask_starts_a_kept_conversation_over_the_documents(self, member, policies):
        client = _client(member.user)
        slug = member.organization.slug
        page = client.get(f"/o/{slug}/ask/").content.decode()
        assert f'value="{policies.pk}" data-name="Policies" checked' in page
        response = client.post(f"/o/{slug}/chat/", {"question": "How long do refunds take?", "mode": "ask",
                                                    "collections": [str(policies.pk)]})  # fmt: skip
        conversation = Conversation.all_orgs.get(user=member.user)
        assert response.url == f"/o/{slug}/chat/{conversation.pk}/"
        with org_scope(member.organization):
            assert list(conversation.collections.all()) == [policies]
        opened = client.get(response.url).content.decode()
        assert 'data-pending="How long do refunds take?"' in opened  # chat.js sends it once connected
        assert 'data-pending=""' in client.get(response.url).content.decode()  # and only once

    @pytest.mark.django_db(transaction=True)
    def test_regenerate_replaces_the_question_and_what_follows(self, member, policies):
        conversation = _start(member, [policies])
        first = _ask(conversation, "How long do refunds take?")
        question = Message.all_orgs.get(conversation=conversation, role="user")
        _ask(conversation, "How long do refunds take, in days?", replace=question.pk)
        kept = Message.all_orgs.filter(conversation=conversation).order_by("created_at")
        assert [m.role for m in kept] == ["user", "assistant"]
        assert services.message_text(kept[0]) == "How long do refunds take, in days?"
        assert not Message.all_orgs.filter(pk=first[-1]["message"]).exists()


class TestTenancy:
    def test_another_member_or_org_gets_a_404(self, member, policies):
        conversation = _start(member, [policies])
        slug = member.organization.slug
        teammate = MembershipFactory(organization=member.organization, role="member")
        stranger = MembershipFactory(role="member")
        for user in (teammate.user, stranger.user):
            client = _client(user)
            assert client.get(f"/api/v1/conversations/{conversation.pk}").status_code == 404
            assert client.patch(f"/api/v1/conversations/{conversation.pk}", {"pinned": True},
                                content_type="application/json").status_code == 404  # fmt: skip
            assert client.delete(f"/api/v1/conversations/{conversation.pk}").status_code == 404
        assert _client(teammate.user).get(f"/o/{slug}/chat/{conversation.pk}/").status_code == 404
        assert _client(teammate.user).post(f"/o/{slug}/chat/{conversation.pk}/delete/").status_code == 404
        assert Conversation.all_orgs.filter(pk=conversation.pk, pinned=False).exists()
        # Starting one with another org's collection: the one error shape, nothing created.
        refused = _client(stranger.user).post("/api/v1/conversations", {"collections": [str(policies.pk)]},
                                              content_type="application/json")  # fmt: skip
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "collection_not_found"
        assert not Conversation.all_orgs.filter(user=stranger.user).exists()

    def test_an_api_key_sees_no_conversation_and_cannot_start_one(self, member):
        conversation = _start(member)
        client = key_client(issue_key(member.organization, scopes=["read", "ask"]).secret)
        assert client.get("/api/v1/conversations").json()["results"] == []
        assert client.get(f"/api/v1/conversations/{conversation.pk}").status_code == 404
        response = client.post("/api/v1/conversations", {}, format="json")
        assert response.status_code == 403 and response.json()["error"]["code"] == "person_only"
