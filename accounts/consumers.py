"""The browser's live channel: notifications and progress events for the signed-in user and their orgs.

The client may send {"type": "ping"} (answered by "pong"). The socket follows the person's memberships: when
they leave a team (or it is deleted, or they are removed) it leaves the team's group at once and tells the tab
`org_left` (a tab on one of the team's pages leaves it); when their session ends it closes with 4401
(saas/core/consumers.py).
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

    def authorize(self, user: Any) -> dict[Any, str]:
        return selectors.membership_org_slugs(user=user)

    def access_groups(self, access: list[Any]) -> list[str]:
        return [user_group(self.user.pk), *(org_group(org_id) for org_id in access),
                *(access_org_group(org_id) for org_id in access)]  # fmt: skip

    async def opened(self) -> None:
        await self.send_event(
            {"type": "hello", "data": {"user": self.user.email, "orgs": [str(o) for o in self.access]}}
        )
        self.known = dict(self.access)

    async def access_updated(self, access: dict[Any, str]) -> None:
        # Said on this socket whatever the order in which the team's own events arrive (org_deleted may be
        # dropped once the team's group is left): the tab learns it is no longer in the team.
        for org_id, slug in self.known.items():
            if org_id not in access:
                await self.send_event({"type": "org_left", "data": {"org": slug}})
        self.known = dict(access)

    async def handle(self, frame: Ping) -> None:
        await self.send_event({"type": "pong", "data": {}})

    async def event_push(self, message: dict[str, Any]) -> None:
        if message.get("group") not in self.joined:
            return  # queued for a group this tab has left since (a removed member): not theirs any more
        await self.send_event(message["event"])
