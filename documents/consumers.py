"""The ask page's live channel: /ws/ask/<org id>/. The browser sends {"type": "ask", "question",
"collection"?} or {"type": "stop"}; the answer comes back as "delta" events and one "done", "stopped" or
"error" (the same events as the API's SSE stream)."""

import asyncio
import threading
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.db import close_old_connections

from accounts import selectors as account_selectors
from accounts.permissions import ASK, principal_for_member
from documents import services
from saas.core.consumers import next_in_org_scope, read_frame
from saas.core.errors import ApplicationError
from saas.core.tenancy import org_scope
from saas.llm import gateway
from saas.llm.providers import LLMError

MAX_FRAME_BYTES = 16 * 1024


class AskConsumer(AsyncJsonWebsocketConsumer):
    principal: Any = None
    task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        org_id = str(self.scope["url_route"]["kwargs"]["org_id"])
        membership = await database_sync_to_async(account_selectors.membership_get_for_user)(user=user, org_id=org_id)
        if membership is None:
            await self.close(code=4404)  # another org does not exist here
            return
        self.principal = principal_for_member(membership)
        self.stop_flag = threading.Event()
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if getattr(self, "stop_flag", None) is not None:
            self.stop_flag.set()  # a closed tab stops its answer, and with it the model call

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        try:
            content = read_frame(text_data, max_bytes=MAX_FRAME_BYTES)
        except ApplicationError as exc:
            await self._error(exc.code, exc.message)
            return
        if content.get("type") not in ("ask", "stop"):
            await self._error("unsupported", 'Send {"type": "ask", "question": ...} or {"type": "stop"}.')
            return
        if content["type"] == "stop":
            self.stop_flag.set()
            return
        if self.task is not None and not self.task.done():
            await self._error("busy", "Wait for the current answer, or stop it first.")
            return
        if not self.principal.has(ASK):
            await self._error("insufficient_role", "Your role in this team cannot ask questions.")
            return
        self.stop_flag.clear()
        self.task = asyncio.create_task(self._answer(str(content.get("question") or ""), content.get("collection")))

    async def _answer(self, question: str, collection_id: Any) -> None:
        org = self.principal.organization
        caller = gateway.Caller(org=org, feature="ask", user=self.principal.user)
        loop = asyncio.get_running_loop()
        events: Any = None
        try:
            collection = await loop.run_in_executor(None, _collection, org, collection_id)
            events = services.ask_stream(
                caller=caller, question=question, collection=collection, should_stop=self.stop_flag.is_set
            )
            while True:
                # Each step runs in a worker thread (retrieval and the gateway are synchronous); a stop frame
                # is handled meanwhile.
                event = await loop.run_in_executor(None, next_in_org_scope, events, org)
                if event is None:
                    break
                await self.send_json(event)
        except ApplicationError as exc:
            await self._error(exc.code, exc.message)
        except LLMError as exc:
            await self._error(exc.kind, exc.message)
        finally:
            if events is not None:
                await loop.run_in_executor(None, events.close)

    async def _error(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "error": {"code": code, "message": message}})


def _collection(org: Any, collection_id: Any) -> Any:
    if not collection_id:
        return None
    with org_scope(org):
        try:
            return services.collection_get(org=org, collection_id=collection_id)
        except (ValueError, TypeError, ApplicationError):
            raise ApplicationError("No such collection.", code="collection_not_found") from None
        finally:
            close_old_connections()
