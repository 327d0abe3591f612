"""The browser chat: a real daphne, a real websocket, the fake upstream streaming token by token."""

import json
import time

import pytest
from django.conf import settings
from django.test import Client
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from agents import services
from agents.models import Conversation, Feedback, Message
from saas.llm.models import LLMCall
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import MembershipFactory
from tests.agents.factories import MessageFactory


def _cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def _socket(server, user, conversation_id):
    return connect(
        f"ws://{server.host}:{server.port}/ws/chat/{conversation_id}/",
        additional_headers={"Cookie": _cookie(user)}, origin=server.url, open_timeout=10,
    )  # fmt: skip


def _until(ws, kind, timeout=20):
    events = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = json.loads(ws.recv(timeout=timeout))
        events.append(event)
        if event["type"] in (kind, "error"):
            return events
    raise AssertionError(f"no {kind}: {events}")


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
class TestChatOverWebsocket:
    @pytest.fixture
    def member(self, fake, models):
        return MembershipFactory(role="member")

    def test_an_answer_streams_token_by_token_and_is_saved(self, daphne_server, member, fake):
        fake.config(token_rate=20)  # tokens apart in time; those that arrive together may share a frame
        conversation = Conversation.all_orgs.create(organization=member.organization, user=member.user)
        with _socket(daphne_server, member.user, conversation.pk) as ws:
            ws.send(json.dumps({"type": "ask", "content": "Tell me a story", "model": "test-small"}))
            events = _until(ws, "done")
        deltas = [e["text"] for e in events if e["type"] == "delta"]
        assert 1 < len(deltas) <= 9 and "".join(deltas) == "The quick brown fox jumps over the lazy dog."
        assert events[-1]["status"] == "complete" and events[-1]["model"] == "test-small"
        answer = Message.all_orgs.get(pk=events[0]["message"])
        assert answer.status == "complete" and services.message_text(answer) == "".join(deltas)
        assert answer.llm_call.status == "ok"
        conversation.refresh_from_db()
        assert conversation.title == "Tell me a story"

    def test_stop_cancels_the_upstream_call(self, daphne_server, member, fake):
        fake.config(token_rate=4)  # 9 tokens would take over 2 seconds
        conversation = Conversation.all_orgs.create(organization=member.organization, user=member.user)
        with _socket(daphne_server, member.user, conversation.pk) as ws:
            ws.send(json.dumps({"type": "ask", "content": "Go slowly", "model": "test-small"}))
            first = _until(ws, "delta")
            assert first[-1]["type"] == "delta"
            ws.send(json.dumps({"type": "stop"}))
            events = _until(ws, "done")
        assert events[-1]["status"] == "cancelled"
        answer = Message.all_orgs.get(pk=first[0]["message"])
        assert answer.status == "cancelled" and 0 < len(services.message_text(answer)) < 44
        call = LLMCall.all_orgs.get()
        assert call.status == "cancelled"

    def test_closing_the_socket_mid_answer_records_it_cancelled(self, daphne_server, member, fake):
        fake.config(token_rate=4)  # 9 tokens would take over 2 seconds
        conversation = Conversation.all_orgs.create(organization=member.organization, user=member.user)
        with _socket(daphne_server, member.user, conversation.pk) as ws:
            ws.send(json.dumps({"type": "ask", "content": "Go slowly", "model": "test-small"}))
            first = _until(ws, "delta")
        answer = Message.all_orgs.get(pk=first[0]["message"])
        deadline = time.monotonic() + 20
        while answer.status == "streaming" and time.monotonic() < deadline:
            time.sleep(0.1)
            answer.refresh_from_db()
        assert answer.status == "cancelled" and 0 < len(services.message_text(answer)) < 44
        assert LLMCall.all_orgs.get().status == "cancelled"  # one row, the call's

    def test_someone_elses_conversation_is_refused(self, daphne_server, member):
        other = MembershipFactory(organization=member.organization)
        conversation = Conversation.all_orgs.create(organization=member.organization, user=other.user)
        with pytest.raises(InvalidStatus):
            _socket(daphne_server, member.user, conversation.pk)

    def test_bad_frames_get_errors_and_a_viewer_cannot_ask(self, daphne_server, member):
        conversation = Conversation.all_orgs.create(organization=member.organization, user=member.user)
        with _socket(daphne_server, member.user, conversation.pk) as ws:
            ws.send("{nope")
            assert json.loads(ws.recv(timeout=10))["error"]["code"] == "malformed"
            ws.send(json.dumps({"type": "ask", "content": "   "}))
            assert json.loads(ws.recv(timeout=10))["error"]["code"] == "invalid"
        viewer = MembershipFactory(organization=member.organization, role="viewer")
        mine = Conversation.all_orgs.create(organization=member.organization, user=viewer.user)
        with _socket(daphne_server, viewer.user, mine.pk) as ws:
            ws.send(json.dumps({"type": "ask", "content": "hi"}))
            assert json.loads(ws.recv(timeout=10))["error"]["code"] == "insufficient_role"
        assert not Message.all_orgs.filter(conversation=mine).exists()


@pytest.mark.django_db
def test_the_chat_pages(client, fake, models):
    member = MembershipFactory(role="member")
    client.force_login(member.user)
    org = member.organization
    response = client.post(f"/o/{org.slug}/chat/")
    assert response.status_code == 302
    page = client.get(response["Location"])
    assert page.status_code == 200 and b"/ws/chat/" in page.content and b"test-small" in page.content
    other = MembershipFactory(organization=org)
    theirs = Conversation.all_orgs.create(organization=org, user=other.user)
    assert client.get(f"/o/{org.slug}/chat/{theirs.pk}/").status_code == 404


@pytest.mark.django_db
def test_feedback_through_the_api(make_member, session_client):
    answer = MessageFactory()
    owner_membership = MembershipFactory(organization=answer.organization, user=answer.conversation.user)
    client = session_client(owner_membership.user)
    url = f"/api/v1/messages/{answer.pk}/feedback"
    assert client.post(url, {"rating": "up"}, format="json").status_code == 201
    assert client.post(url, {"rating": "down", "comment": "Wrong date"}, format="json").status_code == 201
    feedback = Feedback.all_orgs.get()  # the second rating replaced the first
    assert (feedback.rating, feedback.comment) == (-1, "Wrong date")
    assert client.post(url, {"rating": "meh"}, format="json").status_code == 400
    stranger = MembershipFactory(organization=answer.organization)
    assert session_client(stranger.user).post(url, {"rating": "up"}, format="json").status_code == 404
    key = issue_key(answer.organization, scopes=["ask"])
    assert key_client(key.secret).post(url, {"rating": "up"}, format="json").status_code == 201


def test_regenerate_and_edit_frames_name_the_question_by_its_id():
    """Found by the acceptance flow: frames are validated strictly, and a strict UUID refused the id string JSON
    carries, so Regenerate and Edit were refused with "The message does not have the expected fields"."""
    import json
    import uuid

    from agents.consumers import FRAMES
    from saas.core.consumers import parse_frame
    from saas.core.errors import ApplicationError

    question = uuid.uuid4()
    frame = parse_frame(json.dumps({"type": "ask", "content": "Again?", "replace": str(question)}), None,
                        schema=FRAMES, types="ask", max_bytes=65536)  # fmt: skip
    assert frame.replace == question
    for bad in ("not-an-id", 5, ["x"]):
        with pytest.raises(ApplicationError):
            parse_frame(json.dumps({"type": "ask", "content": "Again?", "replace": bad}), None,
                        schema=FRAMES, types="ask", max_bytes=65536)  # fmt: skip
