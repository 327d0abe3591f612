"""The browser's live channel: notifications and progress events for the signed-in user and their orgs.

The client may send {"type": "ping"} (answered by "pong"). The socket follows the person's memberships: when
they leave a team (or it is deleted) it leaves the team's group at once; when their session ends it closes
with 4401 (saas/core/consumers.py).
"""

from typing import Any

from pydantic import TypeAdapter

from accounts import selectors
from saas.core.consumers import AccessConsumer, Ping
from saas.core.events import access_org_group, org_group, user_group

PING: TypeAdapter[Ping] = TypeAdapter(Ping)


class NotificationsConsumer(AccessConsumer):
    frame_schema = PING
    frame_types = '{"type": "ping"}'

    def authorize(self, user: Any) -> list[Any]:
        return selectors.membership_org_ids(user=user)

    def access_groups(self, access: list[Any]) -> list[str]:
        return [user_group(self.user.pk), *(org_group(org_id) for org_id in access),
                *(access_org_group(org_id) for org_id in access)]  # fmt: skip

    async def opened(self) -> None:
        await self.send_event(
            {"type": "hello", "data": {"user": self.user.email, "orgs": [str(o) for o in self.access]}}
        )

    async def handle(self, frame: Ping) -> None:
        await self.send_event({"type": "pong", "data": {}})

    async def event_push(self, message: dict[str, Any]) -> None:
        if message.get("group") not in self.joined:
            return  # queued for a group this tab has left since (a removed member): not theirs any more
        await self.send_event(message["event"])
