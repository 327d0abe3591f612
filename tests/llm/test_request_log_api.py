"""GET /api/v1/requests: the gateway's ledger for admins, filtered and in cursor pages, each call linked to its
crew run, conversation or ask; GET /api/v1/requests/{id}: the masked prompt and answer where the org's policy
lets the caller read them."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import AuditEvent, Membership
from saas.core import crypto
from saas.llm import gateway
from saas.llm.models import LLMCall, OrgLLMSettings
from saas.llm.providers import ChatRequest
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import MembershipFactory, OrganizationFactory
from tests.agents.factories import MessageFactory, RunFactory
from tests.llm.factories import LLMCallFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def org():
    return OrganizationFactory()


@pytest.fixture
def make_member():
    def make(org, role=Membership.Role.MEMBER):
        return MembershipFactory(organization=org, role=role)

    return make


@pytest.fixture
def session_client():
    def make(user):
        client = APIClient()
        client.force_login(user)
        return client

    return make


@pytest.fixture
def admin(org, make_member):
    return make_member(org, role=Membership.Role.ADMIN)


@pytest.fixture
def admin_client(admin, session_client):
    return session_client(admin.user)


def _call(org, minutes_ago=0, **fields):
    call = LLMCallFactory(organization=org, **fields)
    LLMCall.all_orgs.filter(pk=call.pk).update(created_at=timezone.now() - timedelta(minutes=minutes_ago))
    return call


def _ids(response):
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def test_admins_list_the_orgs_calls_newest_first_with_their_figures(org, admin, admin_client):
    old = _call(org, minutes_ago=5, feature="chat", prompt_tokens=10, completion_tokens=4, latency_ms=321,
                cost_usd="0.00012", cache="exact", user=admin.user,
                guardrails=[{"check": "injection", "action": "flagged", "target": "input"}])  # fmt: skip
    new = _call(org, minutes_ago=1, status="error", error_class="upstream_timeout")
    _call(OrganizationFactory())  # another org's: never listed
    response = admin_client.get("/api/v1/requests")
    assert _ids(response) == [str(new.pk), str(old.pk)]
    row = response.json()["results"][1]
    assert row["tokens"] == {"prompt": 10, "completion": 4, "total": 14, "estimated": False}
    assert row["latency_ms"] == 321 and row["cost_usd"] == "0.00012000" and row["cache"] == "exact"
    assert row["guardrail_outcome"] == "flagged" and row["member"] == admin.user.email and row["key"] is None
    assert "prompt" not in row and "answer" not in row
    assert response.json()["results"][0]["error"] == "upstream_timeout"


@pytest.mark.parametrize("role", [Membership.Role.MEMBER, Membership.Role.VIEWER])
def test_members_and_viewers_are_refused(org, make_member, session_client, role):
    client = session_client(make_member(org, role=role).user)
    response = client.get("/api/v1/requests")
    assert response.status_code == 403 and response.json()["error"]["code"] == "insufficient_role"


def test_api_keys_need_the_admin_scope(org):
    call = _call(org)
    reader = key_client(issue_key(org, scopes=["read", "ask"]).secret)
    refused = reader.get("/api/v1/requests")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "missing_scope"
    assert reader.get(f"/api/v1/requests/{call.pk}").status_code == 403
    admin_key = key_client(issue_key(org, scopes=["admin"]).secret)
    assert _ids(admin_key.get("/api/v1/requests")) == [str(call.pk)]


def test_filters(org, admin, admin_client, make_member):
    other = make_member(org)
    key = issue_key(org, scopes=["ask"])
    ask = _call(org, minutes_ago=30, feature="ask", model_requested="auto", model_used="gpt-small",
                upstream="openai", user=admin.user)  # fmt: skip
    chat = _call(org, minutes_ago=20, feature="chat", model_used="claude-haiku", upstream="anthropic",
                 user=other.user, cache="semantic")  # fmt: skip
    failed = _call(org, minutes_ago=10, feature="generate", status="error", api_key=key.api_key,
                   guardrails=[{"check": "denied_keyword", "action": "blocked", "target": "input"}])  # fmt: skip

    def ids(**query):
        return set(_ids(admin_client.get("/api/v1/requests", query)))

    assert ids(feature="ask") == {str(ask.pk)}
    assert ids(model="gpt-small") == ids(model="auto") == {str(ask.pk)}
    assert ids(provider="anthropic") == {str(chat.pk)}
    assert ids(status="error") == {str(failed.pk)}
    assert ids(cache="semantic") == {str(chat.pk)}
    assert ids(key=str(key.api_key.pk)) == ids(key=key.api_key.prefix) == {str(failed.pk)}
    assert ids(member=str(other.pk)) == ids(member=other.user.email.upper()) == {str(chat.pk)}
    assert ids(guarded="1") == {str(failed.pk)}
    since = (timezone.now() - timedelta(minutes=25)).isoformat()
    until = (timezone.now() - timedelta(minutes=15)).isoformat()
    assert ids(since=since) == {str(chat.pk), str(failed.pk)}
    assert ids(since=since, until=until) == {str(chat.pk)}
    assert ids(feature="ask", status="error") == set()
    # Another org's member or key filters to nothing, not to that org's calls.
    stranger = make_member(OrganizationFactory())
    assert ids(member=str(stranger.pk)) == set()


@pytest.mark.parametrize(
    ("query", "field"),
    [({"since": "yesterday"}, "since"), ({"until": "2026-13-01T00:00"}, "until"), ({"status": "great"}, "status"),
     ({"since": "2026-02-01T00:00Z", "until": "2026-01-01T00:00Z"}, "until"), ({"page_size": "0"}, "page_size"),
     ({"colour": "red"}, "colour"), ({"page_size": "1000"}, "page_size")],
)  # fmt: skip
def test_bad_filters_are_a_400_in_the_one_error_shape(admin_client, query, field):
    response = admin_client.get("/api/v1/requests", query)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid" and field in error["details"]["fields"] and error["request_id"]


def test_cursor_pages_are_stable_and_bounded(org, admin_client):
    calls = [_call(org, minutes_ago=60 - i) for i in range(7)]
    newest_first = [str(c.pk) for c in reversed(calls)]
    first = admin_client.get("/api/v1/requests", {"page_size": 3})
    assert _ids(first) == newest_first[:3]
    _call(org)  # a new call between pages does not shift the next one
    second = admin_client.get(first.json()["next"])
    assert _ids(second) == newest_first[3:6]
    third = admin_client.get(second.json()["next"])
    assert _ids(third) == newest_first[6:] and third.json()["next"] is None
    assert _ids(admin_client.get("/api/v1/requests", {"page_size": 2, "status": "ok"})) == _ids(
        admin_client.get("/api/v1/requests", {"page_size": 2})
    )


def test_the_list_costs_the_same_queries_whatever_the_page_holds(org, admin_client, django_assert_num_queries):
    run = RunFactory(organization=org)
    message = MessageFactory(organization=org)
    for i in range(2):
        _call(org, minutes_ago=i, feature="crew", trace_id=str(run.pk), user=message.conversation.user)
    MessageFactory(organization=org, llm_call=_call(org, minutes_ago=3, feature="chat"))
    admin_client.get("/api/v1/requests")  # warm: the config memo and the session
    # Session and membership (2), the page (1), its runs (1) and conversations (1).
    with django_assert_num_queries(5):
        assert len(_ids(admin_client.get("/api/v1/requests"))) == 3
    for i in range(20):
        call = _call(org, minutes_ago=10 + i, feature="chat", api_key=issue_key(org).api_key)
        message = MessageFactory(organization=org, llm_call=call)
    with django_assert_num_queries(5):
        assert len(_ids(admin_client.get("/api/v1/requests"))) == 23


def test_each_call_links_to_its_crew_run_conversation_or_ask(org, admin_client):
    run = RunFactory(organization=org)
    in_run = _call(org, minutes_ago=3, feature="crew", trace_id=str(run.pk))
    chat = _call(org, minutes_ago=2, feature="chat")
    message = MessageFactory(organization=org, llm_call=chat)
    ask = _call(org, minutes_ago=1, feature="ask")
    lone = _call(org, feature="generate")
    rows = {row["id"]: row["origin"] for row in admin_client.get("/api/v1/requests").json()["results"]}
    assert rows[str(in_run.pk)] == {"kind": "crew_run", "id": str(run.pk), "url": f"/o/{org.slug}/runs/{run.pk}/"}
    assert rows[str(chat.pk)] == {"kind": "conversation", "id": str(message.conversation_id),
                                  "url": f"/o/{org.slug}/chat/{message.conversation_id}/"}  # fmt: skip
    assert rows[str(ask.pk)] == {"kind": "ask", "id": str(ask.pk), "url": None}
    assert rows[str(lone.pk)] is None
    detail = admin_client.get(f"/api/v1/requests/{in_run.pk}").json()
    assert detail["origin"]["kind"] == "crew_run"


def test_a_run_of_another_org_is_not_linked(org, admin_client):
    foreign_run = RunFactory(organization=OrganizationFactory())
    call = _call(org, feature="crew", trace_id=str(foreign_run.pk))
    assert admin_client.get(f"/api/v1/requests/{call.pk}").json()["origin"] is None


def test_the_detail_shows_the_masked_prompt_and_answer(org, admin, admin_client, fake, models):
    caller = gateway.Caller(org=org, feature="generate", user=admin.user)
    ask = ChatRequest([{"role": "user", "content": "Write to jane.doe@example.com about the plan"}])
    result = gateway.chat(caller=caller, model="test-small", request=ask)
    detail = admin_client.get(f"/api/v1/requests/{result.call_id}")
    assert detail.status_code == 200, detail.content
    body = detail.json()
    assert body["content_visible"] is True and body["answer"]
    assert "jane.doe@example.com" not in body["prompt"] and body["messages"][0]["role"] == "user"
    assert "jane.doe@example.com" not in body["messages"][0]["content"]
    assert body["attempts"][0]["model"] == "test-small" and body["provider"] == "openai"
    assert body["tokens"]["total"] > 0


@pytest.mark.parametrize(
    ("visibility", "owner_sees", "admin_sees", "admin_key_sees"),
    [("admins", True, True, True), ("owners", True, False, False), ("nobody", False, False, False)],
)
def test_the_orgs_policy_decides_who_reads_prompts(org, make_member, session_client, visibility, owner_sees,
                                                    admin_sees, admin_key_sees):  # fmt: skip
    OrgLLMSettings.objects.for_org(org).create(organization=org, prompt_visibility=visibility)
    call = _call(org, input_encrypted=crypto.encrypt('[{"role": "user", "content": "hi"}]'),
                 output_encrypted=crypto.encrypt("hello"))  # fmt: skip
    clients = {
        "owner": session_client(make_member(org, role=Membership.Role.OWNER).user),
        "admin": session_client(make_member(org, role=Membership.Role.ADMIN).user),
        "admin_key": key_client(issue_key(org, scopes=["admin"]).secret),
    }
    for who, sees in (("owner", owner_sees), ("admin", admin_sees), ("admin_key", admin_key_sees)):
        body = clients[who].get(f"/api/v1/requests/{call.pk}").json()
        assert body["content_visible"] is sees, who
        assert (body["answer"], body["prompt"]) == (("hello", '[{"role": "user", "content": "hi"}]') if sees
                                                    else (None, None)), who  # fmt: skip


def test_another_orgs_call_is_a_404(admin_client):
    foreign = _call(OrganizationFactory())
    for path in (f"/api/v1/requests/{foreign.pk}", "/api/v1/requests/00000000-0000-0000-0000-000000000000",
                 "/api/v1/requests/------------------------------------"):  # fmt: skip
        response = admin_client.get(path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", path


def test_prompt_visibility_is_set_by_owners_in_the_ai_settings(org, make_member, session_client):
    owner = session_client(make_member(org, role=Membership.Role.OWNER).user)
    admin = session_client(make_member(org, role=Membership.Role.ADMIN).user)
    assert owner.get("/api/v1/ai-settings").json()["prompt_visibility"] == "admins"
    refused = admin.patch("/api/v1/ai-settings", {"prompt_visibility": "admins", "injection_guard": "block"},
                          format="json")  # fmt: skip
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_role"
    row = OrgLLMSettings.objects.for_org(org).first()
    assert row is None or row.injection_guard == "flag"  # nothing half-written
    bad = owner.patch("/api/v1/ai-settings", {"prompt_visibility": "everyone"}, format="json")
    assert bad.status_code == 400 and "prompt_visibility" in bad.json()["error"]["details"]["fields"]
    done = owner.patch("/api/v1/ai-settings", {"prompt_visibility": "nobody"}, format="json")
    assert done.status_code == 200 and done.json()["prompt_visibility"] == "nobody"
    assert OrgLLMSettings.objects.for_org(org).get().prompt_visibility == "nobody"
    event = AuditEvent.objects.for_org(org).get(action="org.prompt_visibility_changed")
    assert event.metadata == {"prompt_visibility": {"from": "admins", "to": "nobody"}}
    # An admin key cannot widen it either (no key holds the owner scope).
    key = key_client(issue_key(org, scopes=["admin"]).secret)
    assert key.patch("/api/v1/ai-settings", {"prompt_visibility": "admins"}, format="json").status_code == 403
