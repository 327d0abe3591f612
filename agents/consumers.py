"""The live channels of agents (access checks, close codes and frame parsing: saas/core/consumers.py).

- /ws/chat/<conversation id>/: the browser sends {"type": "ask", "content", "model"?, "replace"?} or
  {"type": "stop"}; the answer comes back as "started", "delta" events and one "done" (or "error") carrying the
  turn's server-rendered, sanitised HTML. `replace` (a question of the conversation) removes that question and
  what follows it first: regenerate and edit-and-resend. Answers draw on the conversation's collections
  (agents/conversations.py). Only the conversation's owner, still a member of its team, may open it; asking
  needs ASK, checked on every frame.
- /ws/runs/<run id>/: the recorded steps of a run, then its live events until it ends; read-only.
"""

import asyncio
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import Field, TypeAdapter

from accounts import selectors as account_selectors
from accounts.permissions import ASK, READ, Principal, principal_for_member, require_ask
from agents import conversations, run_events, selectors, services
from agents.models import Conversation, Run
from saas.core import memo
from saas.core.consumers import (
    CLOSE_FORBIDDEN,
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
from saas.core.events import access_org_group
from saas.core.tenancy import org_scope
from saas.llm import gateway

MODEL_CHARS = 64


class Ask(Frame):
    type: Literal["ask"]
    content: Text
    model: Annotated[Text, Field(max_length=MODEL_CHARS)] = "auto"
    # The question to replace (regenerate, edit and resend), as its id: JSON has no UUID type, so a string.
    replace: Annotated[UUID, Field(strict=False)] | None = None


FRAMES: TypeAdapter[Ask | Stop] = TypeAdapter(Annotated[Ask | Stop, Field(discriminator="type")])


class ChatConsumer(AccessConsumer):
    frame_schema = FRAMES
    frame_types = '{"type": "ask", "content": ...} or {"type": "stop"}'
    max_frame_bytes = 64 * 1024
    access: tuple[Conversation, Principal]

    def authorize_session(self, auth: SessionAuth) -> tuple[Any, tuple[Conversation, Principal]]:
        """The conversation, its org, its owner and their membership in one query (the check runs on connect
        and before every frame)."""
        conversation_id = self.scope["url_route"]["kwargs"]["conversation_id"]
        conversation = selectors.conversation_with_member(conversation_id=conversation_id, user_id=auth.user_id)
        if conversation is None:
            return super().authorize_session(auth)  # signed out (4401) or not theirs (4404): the slow path says
        user = auth.verify(conversation.user)
        if user is None:
            raise AccessLost(CLOSE_SIGNED_OUT)
        return user, self._access(conversation, conversation.member)

    def authorize(self, user: Any) -> tuple[Conversation, Principal]:
        conversation_id = self.scope["url_route"]["kwargs"]["conversation_id"]
        conversation = selectors.conversation_with_member(conversation_id=conversation_id, user_id=user.pk)
        if conversation is None:
            raise AccessLost(CLOSE_NOT_FOUND)  # another org's or another person's conversation is not here
        return self._access(conversation, conversation.member)

    @staticmethod
    def _access(conversation: Conversation, membership: Any) -> tuple[Conversation, Principal]:
        if membership is None:
            raise AccessLost(CLOSE_NOT_FOUND)  # they left the org: its conversations went with it
        membership.organization, membership.user = conversation.organization, conversation.user  # read already
        return conversation, principal_for_member(membership)

    def access_groups(self, access: tuple[Conversation, Principal]) -> list[str]:
        return [access_org_group(access[0].organization_id)]

    async def access_updated(self, access: tuple[Conversation, Principal]) -> None:
        if self.busy and not access[1].has(ASK) and not self.stop_flag.is_set():
            await self.stop_work()
            await self.send_error(PermissionDenied("Your role in this team no longer allows asking questions.",
                                                   code="insufficient_role"))  # fmt: skip

    def checks_in_step(self, frame: Ask | Stop) -> bool:
        # An ask that the last check allows: its access check rides in the turn's start (one hop, not two).
        return isinstance(frame, Ask) and self.access[1].has(ASK) and not self.busy

    async def handle(self, frame: Ask | Stop) -> None:
        if isinstance(frame, Stop):
            await self.stop_work()
            return
        require_ask(self.access[1])  # the right first: a refused asker hears why, whatever is still running
        if self.busy:
            raise ApplicationError("Wait for the current answer, or stop it first.", code="busy")
        self.start_work(lambda: self._answer(frame))

    async def _answer(self, frame: Ask) -> None:
        # The access check, the turn's rows and the call's admission in one hop; a refusal is sent as an "error"
        caller, turn, admitted = await self.checked_step(_start, frame)
        conversation, org = self.access[0], caller.org
        asked, answer = turn.asked, turn.answer
        await self.send_event({"type": "started", "question": str(asked.pk), "message": str(answer.pk),
                               "replaced": str(frame.replace) if frame.replace else None,
                               "title": str(conversation)})  # fmt: skip
        if isinstance(admitted, conversations.Admitted):  # on the event loop: no thread while it streams
            await conversations.answer_relay(admitted, should_stop=self.stop_flag.is_set, send=self.send_event)
            return
        if admitted is not None:  # refused before the model was asked (its outcome saved)
            await self.send_event(admitted)
            return
        events = conversations.answer_stream(
            conversation=conversation, answer=answer, caller=caller, should_stop=self.stop_flag.is_set,
            titles_from_question=turn.titles_from_question,
        )  # fmt: skip
        await self.relay(events, org)  # grounded in documents: retrieval is synchronous, in the stream pool


def _start(access: tuple[Conversation, Principal], frame: Ask) -> Any:
    conversation, principal = access  # as just checked, in this step
    require_ask(principal)
    caller = gateway.Caller(org=principal.organization, feature="chat", user=principal.user)
    # Every memo's version (the model registry, the org's settings, billing, prompts) read in one MGET.
    with org_scope(conversation.organization), memo.versions_read_once():
        if frame.replace is not None:
            conversations.turn_replace(conversation=conversation, message_id=frame.replace)
        model = frame.model or "auto"
        # The turn's start brings the conversation's title up to date ("started" shows it).
        turn = services.chat_turn_begin(conversation=conversation, question=frame.content, model=model)
        admitted = conversations.answer_admit(conversation=conversation, answer=turn.answer, caller=caller, turn=turn)
        return caller, turn, admitted


class RunConsumer(AccessConsumer):
    """A run's live page: /ws/runs/<run id>/. Sends the recorded steps, then the run's live events (tokens,
    steps, status) until it ends; read-only (cancelling is the API's). Reading needs READ in the run's team."""

    access: Run

    def authorize(self, user: Any) -> Run:
        run = Run.all_orgs.filter(pk=self.scope["url_route"]["kwargs"]["run_id"]).first()
        if run is None:
            raise AccessLost(CLOSE_NOT_FOUND)
        membership = account_selectors.membership_get_for_user(user=user, org_id=run.organization_id)
        if membership is None:
            raise AccessLost(CLOSE_NOT_FOUND)  # another org's run does not exist here
        if not principal_for_member(membership).has(READ):
            raise AccessLost(CLOSE_FORBIDDEN)
        return run

    def access_groups(self, access: Run) -> list[str]:
        return [access_org_group(access.organization_id)]

    async def opened(self) -> None:
        self.start_work(self._follow)

    async def stop_work(self) -> None:
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()  # following is only reading: nothing to finish

    async def _follow(self) -> None:
        run = self.access
        subscription = run_events.AsyncSubscription(run.pk)
        await subscription.start()  # before the replay: nothing falls in between
        try:
            current, steps = await self.in_thread(_replay, run)
            await self.send_event({"type": "run", "run": current})
            for step in steps:
                await self.send_event({"type": "step", "step": step})
            last_seq = steps[-1]["seq"] if steps else 0
            if current["status"] in Run.FINISHED:
                await self.send_event({"type": "status", "status": current["status"], "error": current["error"]})
                return
            while True:
                event = await subscription.next_event(idle_timeout=5.0)
                if event is None:
                    # Quiet for a while: the rights are re-checked (a revoke message may have been missed),
                    # and a run whose last event was missed says it anyway.
                    if not await self.recheck():
                        return
                    current = await self.in_thread(_current, run)
                    if current["status"] in Run.FINISHED:
                        await self.send_event({"type": "status", "status": current["status"],
                                               "error": current["error"]})  # fmt: skip
                        return
                    continue
                if event["type"] == "step" and event["step"]["seq"] <= last_seq:
                    continue
                await self.send_event(event)
                if event["type"] == "status" and event["status"] in Run.FINISHED:
                    return
        finally:
            await subscription.close()


def _current(run: Run) -> dict[str, Any]:
    run.refresh_from_db()
    return selectors.run_json(run)


def _replay(run: Run) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return _current(run), selectors.run_steps(run)
