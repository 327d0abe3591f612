"""Push an event to a user's or an org's open browser tabs, from any process (web, Celery worker, beat).

Events travel through the channels-redis layer to NotificationsConsumer, which forwards them as JSON:
    {"type": "<event type>", "data": {...}, "request_id": "..."}

Access messages tell open websockets that a right was removed (saas/core/consumers.py): `access_changed` makes a
user's or an org's sockets re-check their session and membership at once, `session_ended` closes the sockets one
session opened. Services send them in `transaction.on_commit`, so the re-check reads the committed change.
"""

import hashlib
from typing import Any
from uuid import UUID

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django_guid import get_guid


def user_group(user_id: UUID | int | str) -> str:
    return f"user.{user_id}"


def org_group(org_id: UUID | int | str) -> str:
    return f"org.{org_id}"


def _message(group: str, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    # "type" routes the message to NotificationsConsumer.event_push; "event" is what the browser receives;
    # "group" lets a consumer drop what was queued for a group it has since left.
    return {"type": "event.push", "group": group, "event": {"type": event_type, "data": data, "request_id": get_guid()}}


async def apush_to_group(group: str, event_type: str, data: dict[str, Any]) -> None:
    layer = get_channel_layer()
    assert layer is not None, "CHANNEL_LAYERS is not configured"
    await layer.group_send(group, _message(group, event_type, data))


def push_to_user(user_id: UUID | int | str, event_type: str, data: dict[str, Any]) -> None:
    async_to_sync(apush_to_group)(user_group(user_id), event_type, data)


def push_to_org(org_id: UUID | int | str, event_type: str, data: dict[str, Any]) -> None:
    async_to_sync(apush_to_group)(org_group(org_id), event_type, data)


def access_user_group(user_id: UUID | int | str) -> str:
    return f"access.user.{user_id}"


def access_org_group(org_id: UUID | int | str) -> str:
    return f"access.org.{org_id}"


def access_session_group(session_key: str) -> str:
    # A digest: the session key itself never becomes a Redis key name.
    return "access.session." + hashlib.sha256(session_key.encode()).hexdigest()[:40]


def _send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    assert layer is not None, "CHANNEL_LAYERS is not configured"
    async_to_sync(layer.group_send)(group, message)


def access_changed(*, user_id: UUID | int | str | None = None, org_id: UUID | int | str | None = None) -> None:
    """A user's (or every member's of an org) open websockets re-check their rights now: a socket that lost
    them stops what it is doing and closes; the notifications socket leaves the orgs that are no longer theirs."""
    if user_id is not None:
        _send(access_user_group(user_id), {"type": "access.changed"})
    if org_id is not None:
        _send(access_org_group(org_id), {"type": "access.changed"})


def session_ended(session_key: str | None) -> None:
    """The websockets opened by this session close (4401), whatever they were doing."""
    if session_key:
        _send(access_session_group(session_key), {"type": "access.revoked", "code": 4401})
