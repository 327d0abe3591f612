"""The ask page's live channel: /ws/ask/<org id>/. The browser sends {"type": "ask", "question",
"collection"?} or {"type": "stop"}; the answer comes back as "delta" events and one "done", "stopped" or
"error" (the same events as the API's SSE stream). Any member may open it; asking needs ASK, checked on every
frame, and a running answer stops as soon as the asker loses it (saas/core/consumers.py)."""

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import Field, TypeAdapter

from accounts import selectors as account_selectors
from accounts.permissions import ASK, Principal, principal_for_member, require_ask
from documents import services
from saas.core.consumers import (
    CLOSE_NOT_FOUND,
    CLOSE_SIGNED_OUT,
    AccessConsumer,
    AccessLost,
    Frame,
    SessionAuth,
    Stop,
    Text,
)
from saas.core.errors import ApplicationError, PermissionDenied
from saas.core.tenancy import org_scope
from saas.llm import gateway


class Ask(Frame):
    type: Literal["ask"]
    question: Text
    collection: Text | None = None


FRAMES: TypeAdapter[Ask | Stop] = TypeAdapter(Annotated[Ask | Stop, Field(discriminator="type")])

ROLE_LOWERED = "Your role in this team no longer allows asking questions."


class AskConsumer(AccessConsumer):
    frame_schema = FRAMES
    frame_types = '{"type": "ask", "question": ...} or {"type": "stop"}'
    access: Principal

    def authorize_session(self, auth: SessionAuth) -> tuple[Any, Principal]:
        """The membership and its user in one query (the check runs on connect and before every frame)."""
        org_id = self.scope["url_route"]["kwargs"]["org_id"]
        membership = account_selectors.membership_get_for_user_id(user_id=auth.user_id, org_id=org_id)
        if membership is None:
            return super().authorize_session(auth)  # signed out (4401) or not a member (4404): the slow path says
        user = auth.verify(membership.user)
        if user is None:
            raise AccessLost(CLOSE_SIGNED_OUT)
        return user, principal_for_member(membership)

    def authorize(self, user: Any) -> Principal:
        org_id = self.scope["url_route"]["kwargs"]["org_id"]
        membership = account_selectors.membership_get_for_user(user=user, org_id=org_id)
        if membership is None:
            raise AccessLost(CLOSE_NOT_FOUND)  # another org (or one no longer theirs) does not exist here
        return principal_for_member(membership)

    def access_groups(self, access: Principal) -> list[str]:
        from saas.core.events import access_org_group

        return [access_org_group(access.organization.pk)]

    async def access_updated(self, access: Principal) -> None:
        if self.busy and not access.has(ASK) and not self.stop_flag.is_set():
            await self.stop_work()
            await self.send_error(PermissionDenied(ROLE_LOWERED, code="insufficient_role"))

    def checks_in_step(self, frame: Ask | Stop) -> bool:
        # An ask that the last check allows: its access check rides in the collection's lookup (one hop).
        return isinstance(frame, Ask) and self.access.has(ASK) and not self.busy

    async def handle(self, frame: Ask | Stop) -> None:
        if isinstance(frame, Stop):
            await self.stop_work()
            return
        require_ask(self.access)  # the right first: a refused asker hears why, whatever is still running
        if self.busy:
            raise ApplicationError("Wait for the current answer, or stop it first.", code="busy")
        self.start_work(lambda: self._answer(frame))

    async def _answer(self, frame: Ask) -> None:
        collection = await self.checked_step(_collection, frame.collection)
        principal = self.access
        org = principal.organization
        caller = gateway.Caller(org=org, feature="ask", user=principal.user)
        events = services.ask_stream(
            caller=caller, question=frame.question, collection=collection, should_stop=self.stop_flag.is_set
        )
        await self.relay(events, org)  # in one thread of the stream pool (retrieval and the gateway are synchronous)


def _collection(principal: Principal, collection_id: str | None) -> Any:
    """The collection asked about, if any, for the principal as just checked (in this step)."""
    require_ask(principal)
    if collection_id is None or collection_id == "":
        return None
    try:
        UUID(collection_id)
    except ValueError:
        raise ApplicationError("No such collection.", code="collection_not_found") from None
    org = principal.organization
    with org_scope(org):
        return services.collection_get(org=org, collection_id=collection_id)
