"""The browser's live channel: notifications and progress events for the signed-in user and their orgs."""

import json
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from accounts import selectors
from saas.core.events import org_group, user_group

MAX_MESSAGE_BYTES = 16 * 1024


class NotificationsConsumer(AsyncJsonWebsocketConsumer):
    groups: list[str]

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)  # before accept: the handshake is refused with HTTP 403
            return
        org_ids = await database_sync_to_async(selectors.membership_org_ids)(user=user)
        self.groups = [user_group(user.pk), *(org_group(org_id) for org_id in org_ids)]
        for group in self.groups:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        await self.send_json({"type": "hello", "data": {"user": user.email, "orgs": [str(o) for o in org_ids]}})

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        # Hostile or broken clients get an error frame and keep their connection; nothing here can crash it.
        if text_data is None:
            await self._error("unsupported", "Only JSON text frames are accepted.")
            return
        if len(text_data.encode()) > MAX_MESSAGE_BYTES:
            await self._error("too_large", f"Messages are limited to {MAX_MESSAGE_BYTES} bytes.")
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            await self._error("malformed", "The message is not valid JSON.")
            return
        await self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong", "data": {}})
            return
        await self._error("unsupported", 'Unknown message type; the only client message is {"type": "ping"}.')

    async def event_push(self, message: dict[str, Any]) -> None:
        if message.get("group") not in self.groups:
            return  # queued for a group this tab has left since (a removed member): not theirs any more
        await self.send_json(message["event"])

    async def org_leave(self, message: dict[str, Any]) -> None:
        group = message["group"]
        if group in self.groups:
            await self.channel_layer.group_discard(group, self.channel_name)
            self.groups.remove(group)

    async def _error(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "error": {"code": code, "message": message}})
