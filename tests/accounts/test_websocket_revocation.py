"""Websockets are sessions too (#14): an open socket loses its rights the moment the member is removed, leaves,
is demoted, signs out, changes their password, or the account or team is deleted; a socket mid-answer is cut off
and its upstream call cancelled. Everything runs through a real daphne, the channels-redis layer and the
fake upstream; the close codes are those of saas/core/consumers.py."""

import contextlib
import json
import time

import pytest
from django.conf import settings
from django.test import Client
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from accounts import erasure, invitations, services
from accounts.models import ErasureRecord, Membership, User
from accounts.permissions import principal_for_member
from agents.models import Conversation, Message
from saas.core.events import push_to_org, push_to_user
from saas.llm.models import LLMCall
from tests.accounts.conftest import session_client  # noqa: F401
from tests.accounts.factories import MembershipFactory
from tests.agents.factories import RunFactory
from tests.llm.conftest import fake, models  # noqa: F401

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"  # tests.accounts.factories.UserFactory


def _signed_in(user) -> tuple[Client, str]:
    client = Client()
    client.force_login(user)
    return client, f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def _open(server, path: str, cookie: str):
    return connect(f"ws://{server.host}:{server.port}{path}", additional_headers={"Cookie": cookie},
                   origin=server.url, open_timeout=10)  # fmt: skip


def _recv(ws) -> dict:
    return json.loads(ws.recv(timeout=20))


def _until_closed(ws) -> tuple[list[dict], int | None]:
    """Every frame up to the server's close, and the close code (a socket left open fails on the timeout)."""
    frames = []
    try:
        while True:
            frames.append(_recv(ws))
    except ConnectionClosed as closed:
        return frames, closed.rcvd.code if closed.rcvd else None


def _answers(ws) -> None:
    """The socket is open and its access check passes: a frame that is not JSON gets "malformed"."""
    ws.send("{not json")
    assert _recv(ws)["error"]["code"] == "malformed"


def _eventually(check, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.1)


@pytest.fixture
def team(db):
    owner = MembershipFactory(role="owner")
    member = MembershipFactory(organization=owner.organization, role="member")
    return owner, member


def test_removing_a_member_closes_their_ask_socket_and_an_ask_is_refused(daphne_server, team):
    owner, member = team
    _, cookie = _signed_in(member.user)
    with _open(daphne_server, f"/ws/ask/{member.organization_id}/", cookie) as ws:
        _answers(ws)
        services.membership_remove(principal=principal_for_member(owner), membership_id=member.pk)
        with contextlib.suppress(ConnectionClosed):  # the removal may close it before the ask goes out
            ws.send(json.dumps({"type": "ask", "question": "What is in the handbook?"}))
        frames, code = _until_closed(ws)
    assert code == 4404
    assert [f["type"] for f in frames] == ["error"] and frames[0]["error"]["code"] == "access_revoked"
    assert not LLMCall.all_orgs.exists()


def test_removing_a_member_through_the_api_closes_their_sockets(daphne_server, team, session_client):  # noqa: F811
    owner, member = team
    run = RunFactory(organization=member.organization, status="running")
    conversation = Conversation.all_orgs.create(organization=member.organization, user=member.user)
    _, cookie = _signed_in(member.user)
    with (
        _open(daphne_server, f"/ws/ask/{member.organization_id}/", cookie) as ask,
        _open(daphne_server, f"/ws/chat/{conversation.pk}/", cookie) as chat,
        _open(daphne_server, f"/ws/runs/{run.pk}/", cookie) as follow,
    ):
        _answers(ask)
        _answers(chat)
        assert _recv(follow)["type"] == "run"
        response = session_client(owner.user).delete(f"/api/v1/members/{member.pk}",
                                                     HTTP_X_CREWDESK_ORG=str(owner.organization_id))  # fmt: skip
        assert response.status_code == 204, response.content
        assert _until_closed(ask)[1] == 4404
        assert _until_closed(chat)[1] == 4404
        assert _until_closed(follow)[1] == 4404  # the run socket stops following


def test_a_member_who_leaves_loses_their_sockets(daphne_server, team):
    _, member = team
    _, cookie = _signed_in(member.user)
    with _open(daphne_server, f"/ws/ask/{member.organization_id}/", cookie) as ws:
        _answers(ws)
        services.membership_remove(principal=principal_for_member(member), membership_id=member.pk)
        assert _until_closed(ws)[1] == 4404


def test_every_frame_rechecks_the_membership_even_without_an_event(daphne_server, team):
    """A right removed behind the services' back (a database fix, a missed message) still counts."""
    _, member = team
    _, cookie = _signed_in(member.user)
    with _open(daphne_server, f"/ws/ask/{member.organization_id}/", cookie) as ws:
        _answers(ws)
        Membership.all_orgs.filter(pk=member.pk).delete()
        ws.send(json.dumps({"type": "ask", "question": "What is in the handbook?"}))
        frames, code = _until_closed(ws)
    assert code == 4404 and frames[0]["error"]["code"] == "access_revoked"


def test_a_chat_ask_rechecks_the_membership_in_the_turns_own_step(daphne_server, team):
    """The chat's ask carries its access check in the turn's start (one hop): a right removed behind the
    services' back still closes the socket, and no turn is started."""
    _, member = team
    conversation = Conversation.all_orgs.create(organization=member.organization, user=member.user)
    _, cookie = _signed_in(member.user)
    with _open(daphne_server, f"/ws/chat/{conversation.pk}/", cookie) as ws:
        Membership.all_orgs.filter(pk=member.pk).delete()
        ws.send(json.dumps({"type": "ask", "content": "Tell me a story"}))
        frames, code = _until_closed(ws)
    assert code == 4404 and frames[0]["error"]["code"] == "access_revoked"
    assert not Message.all_orgs.filter(conversation=conversation).exists()


def test_a_disabled_user_is_signed_out_on_their_next_frame(daphne_server, team):
    _, member = team
    _, cookie = _signed_in(member.user)
    with _open(daphne_server, "/ws/notifications/", cookie) as ws:
        assert _recv(ws)["type"] == "hello"
        User.objects.filter(pk=member.user_id).update(is_active=False)
        ws.send(json.dumps({"type": "ping"}))
        frames, code = _until_closed(ws)
    assert code == 4401 and frames[0]["error"]["code"] == "signed_out"


def test_a_chat_mid_stream_is_cut_off_when_the_member_is_removed(daphne_server, team, fake, models):  # noqa: F811
    owner, member = team
    fake.config(token_rate=3)  # nine tokens: about three seconds
    conversation = Conversation.all_orgs.create(organization=member.organization, user=member.user)
    _, cookie = _signed_in(member.user)
    with _open(daphne_server, f"/ws/chat/{conversation.pk}/", cookie) as ws:
        ws.send(json.dumps({"type": "ask", "content": "Tell me a story", "model": "test-small"}))
        assert _recv(ws)["type"] == "started"
        assert _recv(ws)["type"] == "delta"
        services.membership_remove(principal=principal_for_member(owner), membership_id=member.pk)
        frames, code = _until_closed(ws)
    assert code == 4404
    assert frames[-1]["error"]["code"] == "access_revoked"
    assert not any(f["type"] == "done" for f in frames)
    # The rest of the answer never came (deltas that arrive together share a frame: count the text).
    assert len("".join(f["text"] for f in frames if f["type"] == "delta")) < 40
    _eventually(lambda: LLMCall.all_orgs.filter(status="cancelled").exists())  # the upstream call ended with it
    answer = Message.all_orgs.get(conversation=conversation, role="assistant")
    _eventually(lambda: Message.all_orgs.get(pk=answer.pk).status == "cancelled")


def test_a_lowered_role_stops_the_answer_and_refuses_the_next_ask(daphne_server, team, fake, models):  # noqa: F811
    owner, member = team
    fake.config(token_rate=3)
    conversation = Conversation.all_orgs.create(organization=member.organization, user=member.user)
    _, cookie = _signed_in(member.user)
    with (
        _open(daphne_server, f"/ws/chat/{conversation.pk}/", cookie) as chat,
        _open(daphne_server, f"/ws/ask/{member.organization_id}/", cookie) as ask,
    ):
        _answers(ask)
        chat.send(json.dumps({"type": "ask", "content": "Tell me a story", "model": "test-small"}))
        assert _recv(chat)["type"] == "started"
        assert _recv(chat)["type"] == "delta"
        services.membership_change_role(principal=principal_for_member(owner), membership_id=member.pk, role="viewer")
        frames = [_recv(chat)]
        while frames[-1]["type"] != "done":
            frames.append(_recv(chat))
        assert any(f["type"] == "error" and f["error"]["code"] == "insufficient_role" for f in frames)
        assert frames[-1]["status"] == "cancelled"
        # A viewer may keep the sockets (they read), but no longer ask on either.
        chat.send(json.dumps({"type": "ask", "content": "And another", "model": "test-small"}))
        assert _recv(chat)["error"]["code"] == "insufficient_role"
        ask.send(json.dumps({"type": "ask", "question": "What is in the handbook?"}))
        assert _recv(ask)["error"]["code"] == "insufficient_role"
    assert Message.all_orgs.filter(conversation=conversation).count() == 2  # the second ask saved nothing


def test_signing_out_closes_that_sessions_sockets_only(daphne_server, team):
    _, member = team
    browser, cookie = _signed_in(member.user)
    _, other_cookie = _signed_in(member.user)  # the same person on another device
    with (
        _open(daphne_server, "/ws/notifications/", cookie) as mine,
        _open(daphne_server, f"/ws/ask/{member.organization_id}/", cookie) as ask,
        _open(daphne_server, "/ws/notifications/", other_cookie) as other,
    ):
        assert _recv(mine)["type"] == "hello" and _recv(other)["type"] == "hello"
        _answers(ask)
        assert browser.post("/accounts/logout/").status_code == 302
        assert _until_closed(mine)[1] == 4401
        frames, code = _until_closed(ask)
        assert code == 4401 and frames[0]["error"]["code"] == "signed_out"
        other.send(json.dumps({"type": "ping"}))
        assert _recv(other)["type"] == "pong"


def test_a_password_change_closes_the_other_sessions_sockets(daphne_server, team):
    _, member = team
    _, cookie = _signed_in(member.user)
    elsewhere, _ = _signed_in(member.user)
    with _open(daphne_server, f"/ws/ask/{member.organization_id}/", cookie) as ws:
        _answers(ws)
        new = "a new and long passphrase"
        changed = elsewhere.post("/accounts/password/change/",
                                 {"oldpassword": PASSWORD, "password1": new, "password2": new})  # fmt: skip
        assert changed.status_code == 302, changed.content
        assert _until_closed(ws)[1] == 4401


def test_erasing_the_account_closes_every_socket(daphne_server, team):
    _, member = team
    _, cookie = _signed_in(member.user)
    with (
        _open(daphne_server, "/ws/notifications/", cookie) as notifications,
        _open(daphne_server, f"/ws/ask/{member.organization_id}/", cookie) as ask,
    ):
        assert _recv(notifications)["type"] == "hello"
        _answers(ask)
        erasure.account_erase_request(user=member.user, password=PASSWORD)
        assert _until_closed(ask)[1] == 4401
        assert _until_closed(notifications)[1] == 4401


def test_deleting_the_team_closes_its_sockets_and_the_tab_leaves_it(daphne_server, team):
    owner, member = team
    run = RunFactory(organization=member.organization, status="running")
    _, cookie = _signed_in(member.user)
    with (
        _open(daphne_server, "/ws/notifications/", cookie) as notifications,
        _open(daphne_server, f"/ws/ask/{member.organization_id}/", cookie) as ask,
        _open(daphne_server, f"/ws/runs/{run.pk}/", cookie) as follow,
    ):
        assert _recv(notifications)["type"] == "hello"
        _answers(ask)
        assert _recv(follow)["type"] == "run"
        record = erasure.organization_erase_request(principal=principal_for_member(owner),
                                                    confirm=owner.organization.slug, password=PASSWORD)  # fmt: skip
        assert _until_closed(ask)[1] == 4404
        assert _until_closed(follow)[1] == 4404
        assert _recv(notifications)["type"] == "org_deleted"
        left = _recv(notifications)
        assert (left["type"], left["data"]) == ("org_left", {"org": member.organization.slug})
        push_to_org(member.organization_id, "secret", {})
        push_to_user(member.user_id, "marker", {})
        assert _recv(notifications)["type"] == "marker"  # the person's own socket stays, without the team
    # The erasure the request queued runs to its end here (or in the test worker, if it took the job first): none
    # may still be deleting rows while the database is emptied for the next test (that deadlocked once).
    erasure.erasure_run(record_id=record.pk)
    _eventually(lambda: ErasureRecord.objects.get(pk=record.pk).status == ErasureRecord.Status.DONE)


def test_an_operator_removing_a_membership_in_the_admin_closes_the_members_sockets(daphne_server, team):
    _, member = team
    operator = User.objects.create_superuser(email="operator@example.com", password=PASSWORD)
    admin_client, _ = _signed_in(operator)
    _, cookie = _signed_in(member.user)
    with _open(daphne_server, f"/ws/ask/{member.organization_id}/", cookie) as ask:
        _answers(ask)
        response = admin_client.post(f"/admin/accounts/membership/{member.pk}/delete/", {"post": "yes"})
        assert response.status_code == 302, response.content[:500]
        assert not Membership.all_orgs.filter(pk=member.pk).exists()
        assert _until_closed(ask)[1] == 4404


def test_accepting_an_invitation_brings_the_open_tab_into_the_team(daphne_server, team):
    owner, _ = team
    newcomer = User.objects.create_user(email="newcomer@example.com", password=PASSWORD)
    issued = invitations.invitation_create(principal=principal_for_member(owner), email=newcomer.email, role="member")
    _, cookie = _signed_in(newcomer)
    with _open(daphne_server, "/ws/notifications/", cookie) as notifications:
        assert _recv(notifications)["data"]["orgs"] == []
        invitations.invitation_accept(token=issued.token, user=newcomer)
        # Once the socket has re-checked, the team's events reach it without a reload.
        marker = {"n": 0}

        def delivered() -> bool:
            marker["n"] += 1
            push_to_org(owner.organization_id, "team_news", {"n": marker["n"]})
            with contextlib.suppress(TimeoutError):
                return json.loads(notifications.recv(timeout=0.5))["type"] == "team_news"
            return False

        _eventually(delivered)
