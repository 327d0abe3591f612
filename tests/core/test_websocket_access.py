"""The websocket access check, made cheaper (#19) without losing a rule: the session's user is verified as
django.contrib.auth.get_user verifies it (a configured backend, an active user, the password's session hash),
the chat and ask sockets read the user with their rights in one query, and a socket's channel-layer groups are
joined and left in one round trip. The sockets end to end: tests/accounts/test_websocket_revocation.py,
tests/core/test_websocket_handshakes.py."""

import asyncio
from importlib import import_module

import pytest
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY
from django.test import Client
from django.utils import timezone

from accounts.permissions import ASK
from agents.consumers import ChatConsumer
from agents.models import Conversation
from documents.consumers import AskConsumer
from saas.core.consumers import CLOSE_NOT_FOUND, CLOSE_SIGNED_OUT, AccessLost, groups_change, session_auth
from tests.accounts.factories import MembershipFactory

pytestmark = pytest.mark.django_db


def _session_key(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def _consumer(cls, **kwargs):
    consumer = cls()
    consumer.scope = {"url_route": {"kwargs": {k: str(v) for k, v in kwargs.items()}}}
    return consumer


def _refused(consumer, key) -> int | None:
    try:
        consumer.authorize_session(session_auth(key))
    except AccessLost as lost:
        return lost.code
    return None


def test_the_session_is_verified_as_django_verifies_it():
    member = MembershipFactory(role="member")
    user = member.user
    key = _session_key(user)
    auth = session_auth(key)
    assert auth is not None and auth.user_id == user.pk
    assert auth.user() == user and auth.verify(user) == user

    user.set_password("a new password, elsewhere")
    user.save(update_fields=["password"])
    assert auth.verify(user) is None and session_auth(key).user() is None  # signed out by the password change

    other = MembershipFactory(role="member").user
    other_auth = session_auth(_session_key(other))
    assert other_auth.verify(user) is None  # a user the session does not name
    other.is_active = False
    other.save(update_fields=["is_active"])
    assert other_auth.user() is None

    store = import_module(settings.SESSION_ENGINE).SessionStore(_session_key(member.user))
    store[BACKEND_SESSION_KEY] = "not.a.configured.Backend"
    store.save()
    assert session_auth(store.session_key) is None
    assert session_auth(None) is None and session_auth("no-such-session") is None


def test_the_chat_check_reads_the_user_and_the_rights_in_one_query(django_assert_num_queries):
    member = MembershipFactory(role="member")
    conversation = Conversation.all_orgs.create(organization=member.organization, user=member.user)
    key = _session_key(member.user)
    auth = session_auth(key)  # a cached_db session: a cache read from now on, no query
    consumer = _consumer(ChatConsumer, conversation_id=conversation.pk)
    with django_assert_num_queries(1):
        user, (found, principal) = consumer.authorize_session(session_auth(key))
    assert user == member.user and found == conversation
    assert principal.organization == member.organization and principal.user == member.user and principal.has(ASK)
    assert principal.membership == member and principal.role == "member"
    assert auth.user_id == user.pk


def test_the_ask_check_reads_the_user_and_the_rights_in_one_query(django_assert_num_queries):
    member = MembershipFactory(role="viewer")
    key = _session_key(member.user)
    session_auth(key)
    consumer = _consumer(AskConsumer, org_id=member.organization_id)
    with django_assert_num_queries(1):
        user, principal = consumer.authorize_session(session_auth(key))
    assert user == member.user and principal.organization == member.organization and not principal.has(ASK)


def test_the_chat_check_still_refuses():
    member = MembershipFactory(role="member")
    mine = Conversation.all_orgs.create(organization=member.organization, user=member.user)
    colleague = MembershipFactory(organization=member.organization)
    theirs = Conversation.all_orgs.create(organization=member.organization, user=colleague.user)
    stranger = MembershipFactory()
    other_org = Conversation.all_orgs.create(organization=stranger.organization, user=stranger.user)
    key = _session_key(member.user)

    assert _refused(_consumer(ChatConsumer, conversation_id=mine.pk), key) is None
    assert _refused(_consumer(ChatConsumer, conversation_id=theirs.pk), key) == CLOSE_NOT_FOUND  # a colleague's
    assert _refused(_consumer(ChatConsumer, conversation_id=other_org.pk), key) == CLOSE_NOT_FOUND  # another org
    assert _refused(_consumer(ChatConsumer, conversation_id="not-a-uuid"), key) == CLOSE_NOT_FOUND
    # Their own conversation in a team they were in once (theirs left; the team itself is kept):
    # the conversation went with the membership.
    kept = MembershipFactory()
    left = Conversation.all_orgs.create(organization=kept.organization, user=member.user)
    assert _refused(_consumer(ChatConsumer, conversation_id=left.pk), key) == CLOSE_NOT_FOUND
    # A team being deleted is gone for everyone.
    org = member.organization
    org.deletion_requested_at = timezone.now()
    org.save(update_fields=["deletion_requested_at"])
    assert _refused(_consumer(ChatConsumer, conversation_id=mine.pk), key) == CLOSE_NOT_FOUND
    # Signed out (the password changed): 4401 before anything about the object.
    org.deletion_requested_at = None
    org.save(update_fields=["deletion_requested_at"])
    member.user.set_password("changed elsewhere")
    member.user.save(update_fields=["password"])
    assert _refused(_consumer(ChatConsumer, conversation_id=mine.pk), key) == CLOSE_SIGNED_OUT
    assert _refused(_consumer(ChatConsumer, conversation_id=theirs.pk), key) == CLOSE_SIGNED_OUT


def test_the_ask_check_still_refuses():
    member = MembershipFactory(role="member")
    stranger = MembershipFactory()
    key = _session_key(member.user)
    assert _refused(_consumer(AskConsumer, org_id=member.organization_id), key) is None
    assert _refused(_consumer(AskConsumer, org_id=stranger.organization_id), key) == CLOSE_NOT_FOUND
    assert _refused(_consumer(AskConsumer, org_id="nope"), key) == CLOSE_NOT_FOUND
    member.user.is_active = False
    member.user.save(update_fields=["is_active"])
    assert _refused(_consumer(AskConsumer, org_id=member.organization_id), key) == CLOSE_SIGNED_OUT


def test_groups_are_joined_and_left_in_one_go():
    async def run() -> tuple[list[bool], list[bool], list[bool]]:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        groups = [f"test-groups-{i}" for i in range(3)]
        connection = layer.connection(0)

        async def member_of() -> list[bool]:
            return [await connection.zscore(layer._group_key(g), channel) is not None for g in groups]

        await groups_change(layer, channel, add=set(groups))
        joined = await member_of()
        await groups_change(layer, channel, add={groups[0]}, discard={groups[1]})
        changed = await member_of()
        await groups_change(layer, channel, discard=set(groups))
        left = await member_of()
        await layer.close_pools()
        return joined, changed, left

    joined, changed, left = asyncio.run(run())
    assert joined == [True, True, True]
    assert changed == [True, False, True]
    assert left == [False, False, False]


def _fields(instance) -> dict:
    return {k: v for k, v in vars(instance).items() if not k.startswith("_") and k != "member"}


def test_the_compiled_check_query_reads_what_the_orm_reads():
    from agents import selectors

    member = MembershipFactory(role="admin")
    conversation = Conversation.all_orgs.create(organization=member.organization, user=member.user, model="m-1",
                                                title="A title, encrypted at rest")  # fmt: skip
    outsider = MembershipFactory()
    left = Conversation.all_orgs.create(organization=outsider.organization, user=member.user)
    for wanted, user_id in ((conversation, member.user_id), (left, member.user_id), (conversation, outsider.user_id)):
        compiled = selectors.conversation_with_member(conversation_id=wanted.pk, user_id=user_id)
        orm = selectors._conversation_with_member(wanted.pk, user_id).first()
        if orm is None:
            assert compiled is None
            continue
        for found, expected in ((compiled, orm), (compiled.organization, orm.organization), (compiled.user, orm.user)):
            assert found == expected and "id" in vars(found) and _fields(found) == _fields(expected)
        orm_member = getattr(orm, "member", None)  # unset by select_related when there is no row
        assert compiled.member == orm_member and (compiled.member is None) == (wanted is left)
    found = selectors.conversation_with_member(conversation_id=conversation.pk, user_id=member.user_id)
    assert found.title == "A title, encrypted at rest" and found.model == "m-1"
    assert found.member.role == "admin" and found.member.organization_id == member.organization_id
