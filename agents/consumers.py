"""The chat's live channel: /ws/chat/<conversation id>/. The browser sends {"type": "ask", "content", "model"}
or {"type": "stop"}; the answer comes back as "delta" events and one "done" (or "error")."""

import asyncio
import threading
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from accounts import selectors as account_selectors
from accounts.permissions import ASK, READ, principal_for_member
from agents import run_events, selectors, services
from agents.models import Run
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


class RunConsumer(AsyncJsonWebsocketConsumer):
    """A run's live page: /ws/runs/<run id>/. Sends the recorded steps, then the run's live events (tokens,
    steps, status) until it ends; read-only (cancelling is the API's)."""

    task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        run_id = self.scope["url_route"]["kwargs"]["run_id"]
        self.run = await database_sync_to_async(self._load)(user, run_id)
        if self.run is None:
            await self.close(code=4404)  # another org's run does not exist here
            return
        await self.accept()
        self.task = asyncio.create_task(self._follow())

    def _load(self, user: Any, run_id: str) -> Any:
        run = Run.all_orgs.filter(pk=run_id).first()
        if run is None:
            return None
        membership = account_selectors.membership_get_for_user(user=user, org_id=run.organization_id)
        return run if membership is not None and principal_for_member(membership).has(READ) else None

    async def disconnect(self, code: int) -> None:
        if self.task is not None:
            self.task.cancel()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        await self.send_json({"type": "error", "error": {"code": "read_only", "message": "This channel only sends."}})

    async def _follow(self) -> None:
        subscription = run_events.AsyncSubscription(self.run.pk)
        await subscription.start()  # before the replay: nothing falls in between
        try:
            run, steps = await database_sync_to_async(self._replay)()
            await self.send_json({"type": "run", "run": run})
            for step in steps:
                await self.send_json({"type": "step", "step": step})
            last_seq = steps[-1]["seq"] if steps else 0
            if run["status"] in Run.FINISHED:
                await self.send_json({"type": "status", "status": run["status"], "error": run["error"]})
                return
            while True:
                event = await subscription.next_event(idle_timeout=5.0)
                if event is None:
                    run = await database_sync_to_async(self._current)()
                    if run["status"] in Run.FINISHED:  # its last event was missed: say it anyway
                        await self.send_json({"type": "status", "status": run["status"], "error": run["error"]})
                        return
                    continue
                if event["type"] == "step" and event["step"]["seq"] <= last_seq:
                    continue
                await self.send_json(event)
                if event["type"] == "status" and event["status"] in Run.FINISHED:
                    return
        finally:
            await subscription.close()

    def _current(self) -> dict[str, Any]:
        self.run.refresh_from_db()
        return selectors.run_json(self.run)

    def _replay(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return self._current(), selectors.run_steps(self.run)
