"""Push an event to a user's or an org's open browser tabs, from any process (web, Celery worker, beat).

Events travel through the channels-redis layer to NotificationsConsumer, which forwards them as JSON:
    {"type": "<event type>", "data": {...}, "request_id": "..."}
"""

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


def unsubscribe_user_from_org(user_id: UUID | int | str, org_id: UUID | int | str) -> None:
    """Open tabs of a user who left (or was removed from) an org stop receiving that org's events at once."""
    layer = get_channel_layer()
    assert layer is not None, "CHANNEL_LAYERS is not configured"
    async_to_sync(layer.group_send)(user_group(user_id), {"type": "org.leave", "group": org_group(org_id)})
