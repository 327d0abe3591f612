"""The trace pages (list and timeline) and the links to a trace: from the request log, the crew run page, a chat
answer and the feedback on it. A chat turn is one trace, with the ask inside it."""

import re

import pytest
from django.test import Client

from agents.models import Message, Run
from saas.llm.models import LLMCall, ModelConfig, Span, Trace
from saas.llm.registry import sync_registry
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import MembershipFactory
from tests.agents.test_conversations import HANDBOOK, _ask, _start, _upload
from tests.agents.test_crews import _run_here, _with_policy
from tests.analytics.factories import SpanFactory
from tests.documents import files

pytestmark = pytest.mark.django_db(transaction=True)  # the gateway records its call on a connection of its own


@pytest.fixture
def admin():
    sync_registry(ModelConfig)  # a flushed (transactional) test database has lost the seeded registry
    return MembershipFactory(role="admin")


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_chat_turn_is_one_trace_and_its_answer_and_feedback_link_to_it(admin):
    org = admin.organization
    _upload(org, "handbook.pdf", files.pdf(HANDBOOK))
    conversation = _start(admin)
    events = _ask(conversation, "How long do refunds take?")
    answer = Message.all_orgs.get(pk=events[-1]["message"])
    trace = Trace.all_orgs.get(organization=org)  # one trace: the ask inside the turn is part of it
    assert trace.kind == "chat" and trace.subject_id == str(answer.pk) and trace.user_id == admin.user_id
    kinds = {s.kind for s in Span.all_orgs.filter(trace=trace)}
    assert kinds == {"retrieval", "llm"}
    assert LLMCall.all_orgs.get(pk=answer.llm_call_id).trace_id == str(trace.pk)

    client = _client(admin.user)
    page = client.get(f"/o/{org.slug}/chat/{conversation.pk}/").content.decode()
    assert f"/o/{org.slug}/traces/{trace.pk}/" in page
    rated = client.post(f"/api/v1/messages/{answer.pk}/feedback", {"rating": "down"}, content_type="application/json")
    assert rated.status_code == 201 and rated.json()["trace_id"] == str(trace.pk)
    shown = client.get(f"/o/{org.slug}/traces/{trace.pk}/").content.decode()
    assert 'id="trace-subject"' in shown and f"/chat/{conversation.pk}/" in shown

    member = MembershipFactory(role="member", organization=org)  # not an admin: no trace link, no trace page
    theirs = _start(member)
    _ask(theirs, "How long do refunds take?")
    member_client = _client(member.user)
    assert "/traces/" not in member_client.get(f"/o/{org.slug}/chat/{theirs.pk}/").content.decode()
    assert member_client.get(f"/o/{org.slug}/traces/{trace.pk}/").status_code in (403, 404)
    assert member_client.get(f"/o/{org.slug}/traces/").status_code in (403, 404)


def test_the_timeline_shows_each_span_with_its_figures_and_the_request_log_links_to_it(admin):
    org = admin.organization
    client = key_client(issue_key(org, scopes=["read", "ask", "documents:write", "crews:run", "admin"]).secret)
    _with_policy(org, client)
    crew = client.post("/api/v1/crew-starters", {"starter": "research-brief"}, format="json").json()
    run = _run_here(client, crew["id"], {"topic": "how long refunds take"})
    assert run.status == Run.Status.SUCCEEDED, run.error
    browser = _client(admin.user)

    listing = browser.get(f"/o/{org.slug}/traces/").content.decode()
    assert f'id="trace-{run.pk}"' in listing and "Crew run: Research brief" in listing
    assert f'id="trace-{run.pk}"' in browser.get(f"/o/{org.slug}/traces/", {"kind": "crew_run"}).content.decode()
    assert f'id="trace-{run.pk}"' not in browser.get(f"/o/{org.slug}/traces/", {"kind": "ask"}).content.decode()
    assert f'id="trace-{run.pk}"' in browser.get(f"/o/{org.slug}/traces/", {"q": "brief"}).content.decode()
    bad = browser.get(f"/o/{org.slug}/traces/", {"since": "yesterday"})
    assert bad.status_code == 200 and "errorlist" in bad.content.decode()

    page = browser.get(f"/o/{org.slug}/traces/{run.pk}/").content.decode()
    spans = list(Span.all_orgs.filter(trace_id=run.pk))
    assert page.count('class="tl-row') == len(spans)
    for name in ("Task research", "Task draft", "Task edit", "search_documents", "Search the documents"):
        assert name in page
    assert "policy.pdf" in page  # the retrieved passages, by their document's title
    assert f"/o/{org.slug}/runs/{run.pk}/" in page  # what the trace is about
    for span in spans:
        if span.llm_call_id:
            assert f"/o/{org.slug}/requests/{span.llm_call_id}/" in page
    bars = re.findall(r'<rect class="bar" x="([\d.]+)%" y="4" width="([\d.]+)%"', page)
    assert len(bars) == len(spans) and all(0 <= float(x) <= 100 and 0 < float(w) <= 100 for x, w in bars)
    assert " style=" not in page  # the Content-Security-Policy forbids inline styles
    assert page.count('<table class="passages">') == len([s for s in spans if s.kind == "retrieval"])

    log = browser.get(f"/o/{org.slug}/requests/").content.decode()
    assert f'href="/o/{org.slug}/traces/{run.pk}/"' in log
    assert f'href="/o/{org.slug}/traces/{run.pk}/"' in browser.get(f"/o/{org.slug}/runs/{run.pk}/").content.decode()


def test_another_orgs_trace_page_is_a_404(admin):
    theirs = SpanFactory().trace
    client = _client(admin.user)
    assert client.get(f"/o/{admin.organization.slug}/traces/{theirs.pk}/").status_code == 404
    assert str(theirs.pk) not in client.get(f"/o/{admin.organization.slug}/traces/").content.decode()
