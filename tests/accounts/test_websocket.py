"""Websocket round-trips through a real daphne on loopback, the channels-redis layer and a session cookie."""

import json

import pytest
from django.conf import settings
from django.test import Client
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from saas.core.events import push_to_org, push_to_user
from tests.accounts.factories import MembershipFactory, UserFactory

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def _session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def _connect(server, cookie: str | None):
    headers = {"Cookie": cookie} if cookie else {}
    return connect(
        f"ws://{server.host}:{server.port}/ws/notifications/",
        additional_headers=headers,
        origin=server.url,
        open_timeout=10,
    )


def _recv(ws) -> dict:
    return json.loads(ws.recv(timeout=10))


def test_signed_in_user_receives_events_pushed_to_them_and_to_their_org(daphne_server):
    membership = MembershipFactory()
    with _connect(daphne_server, _session_cookie(membership.user)) as ws:
        hello = _recv(ws)
        assert hello["type"] == "hello"
        assert hello["data"]["orgs"] == [str(membership.organization_id)]

        ws.send(json.dumps({"type": "ping"}))
        assert _recv(ws)["type"] == "pong"

        push_to_user(membership.user_id, "document.progress", {"message": "50%"})
        event = _recv(ws)
        assert event["type"] == "document.progress"
        assert event["data"] == {"message": "50%"}

        push_to_org(membership.organization_id, "crew.run.finished", {"run": "r1"})
        assert _recv(ws)["type"] == "crew.run.finished"


def test_events_of_another_user_or_org_never_arrive(daphne_server):
    mine = MembershipFactory()
    theirs = MembershipFactory()
    with _connect(daphne_server, _session_cookie(mine.user)) as ws:
        _recv(ws)  # hello
        push_to_user(theirs.user_id, "secret", {"message": "not yours"})
        push_to_org(theirs.organization_id, "secret", {"message": "not yours"})
        push_to_user(mine.user_id, "marker", {})
        # Delivery is ordered per connection: the marker arriving first means the others never will.
        assert _recv(ws)["type"] == "marker"


def test_anonymous_connection_is_refused(daphne_server):
    with pytest.raises(InvalidStatus) as excinfo:
        _connect(daphne_server, None)
    assert excinfo.value.response.status_code == 403


def test_foreign_origin_is_refused(daphne_server):
    user = UserFactory()
    with pytest.raises(InvalidStatus):
        connect(
            f"ws://{daphne_server.host}:{daphne_server.port}/ws/notifications/",
            additional_headers={"Cookie": _session_cookie(user)},
            origin="https://evil.example",
            open_timeout=10,
        )


def test_malformed_and_oversized_messages_get_an_error_and_the_connection_survives(daphne_server):
    user = UserFactory()
    with _connect(daphne_server, _session_cookie(user)) as ws:
        _recv(ws)
        ws.send("{not json")
        assert _recv(ws)["error"]["code"] == "malformed"
        ws.send(json.dumps({"type": "ping", "pad": "x" * 20000}))
        assert _recv(ws)["error"]["code"] == "too_large"
        ws.send(json.dumps(["a", "list"]))
        assert _recv(ws)["error"]["code"] == "unsupported"
        ws.send(b"\x00\x01")
        assert _recv(ws)["error"]["code"] == "unsupported"
        ws.send(json.dumps({"type": "ping"}))
        assert _recv(ws)["type"] == "pong"


def test_a_removed_member_stops_receiving_the_orgs_events_at_once(daphne_server):
    from accounts import services
    from accounts.permissions import principal_for_member

    owner = MembershipFactory(role="owner")
    member = MembershipFactory(organization=owner.organization)
    with _connect(daphne_server, _session_cookie(member.user)) as ws:
        _recv(ws)  # hello
        push_to_org(owner.organization_id, "before", {})
        assert _recv(ws)["type"] == "before"
        services.membership_remove(principal=principal_for_member(owner), membership_id=member.pk)
        left = _recv(ws)  # the tab is told which team it left (a tab on its pages leaves them)
        assert (left["type"], left["data"]) == ("org_left", {"org": owner.organization.slug})
        push_to_org(owner.organization_id, "secret", {})
        push_to_user(member.user_id, "marker", {})
        assert _recv(ws)["type"] == "marker"
