"""The chat's live channel: /ws/chat/<conversation id>/. The browser sends {"type": "ask", "content", "model"}
or {"type": "stop"}; the answer comes back as "delta" events and one "done" (or "error")."""

import asyncio
import threading
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from accounts import selectors as account_selectors
from accounts.permissions import ASK, principal_for_member
from agents import services
from saas.core.consumers import next_in_org_scope, read_frame
from saas.core.errors import ApplicationError
from saas.core.tenancy import org_scope
from saas.llm import gateway

MAX_FRAME_BYTES = 64 * 1024


class ChatConsumer(AsyncJsonWebsocketConsumer):
    conversation: Any = None
    principal: Any = None
    task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        found = await database_sync_to_async(self._load)(user, self.scope["url_route"]["kwargs"]["conversation_id"])
        if not found:
            await self.close(code=4404)  # another org's or another person's conversation does not exist here
            return
        self.stop_flag = threading.Event()
        await self.accept()

    def _load(self, user: Any, conversation_id: str) -> bool:
        from agents.models import Conversation

        conversation = (
            Conversation.all_orgs.select_related("organization").filter(pk=conversation_id, user=user).first()
        )
        if conversation is None:
            return False
        membership = account_selectors.membership_get_for_user(user=user, org_id=conversation.organization_id)
        if membership is None:
            return False  # they left the org: its conversations went with it
        self.conversation, self.principal = conversation, principal_for_member(membership)
        return True

    async def disconnect(self, code: int) -> None:
        if getattr(self, "stop_flag", None) is not None:
            self.stop_flag.set()  # a closed tab stops its answer, and with it the upstream call

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        try:
            content = read_frame(text_data, max_bytes=MAX_FRAME_BYTES)
        except ApplicationError as exc:
            await self._error(exc.code, exc.message)
            return
        if content.get("type") == "stop":
            self.stop_flag.set()
            return
        if content.get("type") != "ask":
            await self._error("unsupported", 'Send {"type": "ask", "content": ...} or {"type": "stop"}.')
            return
        if self.task is not None and not self.task.done():
            await self._error("busy", "Wait for the current answer, or stop it first.")
            return
        if not self.principal.has(ASK):
            await self._error("insufficient_role", "Your role in this team cannot ask questions.")
            return
        self.stop_flag.clear()
        self.task = asyncio.create_task(
            self._answer(str(content.get("content") or ""), str(content.get("model") or "auto"))
        )

    async def _answer(self, question: str, model: str) -> None:
        try:
            asked, answer = await database_sync_to_async(self._start)(question, model)
        except ApplicationError as exc:
            await self._error(exc.code, exc.message)
            return
        await self.send_json({"type": "started", "question": str(asked.pk), "message": str(answer.pk)})
        events = services.chat_answer_stream(
            conversation=self.conversation,
            answer=answer,
            caller=gateway.Caller(org=self.principal.organization, feature="chat", user=self.principal.user),
            should_stop=self.stop_flag.is_set,
        )
        loop = asyncio.get_running_loop()
        while True:
            # Each step runs in a worker thread (the gateway is synchronous); other frames, such as a stop,
            # are handled meanwhile.
            event = await loop.run_in_executor(None, next_in_org_scope, events, self.principal.organization)
            if event is None:
                break
            try:
                await self.send_json(event)
            except Exception:
                self.stop_flag.set()

    def _start(self, question: str, model: str) -> Any:
        with org_scope(self.principal.organization):
            return services.chat_turn_start(conversation=self.conversation, question=question, model=model)

    async def _error(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "error": {"code": code, "message": message}})
