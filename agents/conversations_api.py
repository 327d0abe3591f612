"""/api/v1/conversations: a person's chat conversations (list with ?q= search, start, read with its messages,
rename, pin, pick collections, delete). Conversations are private to the member who started them: another
person's, or another org's, is a 404; an API key (no person) is refused. Answers are asked over the
conversation's websocket (/ws/chat/<id>/)."""

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.permissions import ASK
from agents import conversations
from agents.models import Conversation
from saas.core.api import OrgScopedViewSet, StrictSerializer
from saas.core.errors import PermissionDenied


class ConversationIn(StrictSerializer):
    collections = serializers.ListField(child=serializers.UUIDField(), required=False, default=list,
                                        max_length=conversations.MAX_COLLECTIONS)  # fmt: skip
    model = serializers.CharField(required=False, max_length=64, default="default")


class ConversationPatch(StrictSerializer):
    title = serializers.CharField(required=False, max_length=120)
    pinned = serializers.BooleanField(required=False)
    collections = serializers.ListField(child=serializers.UUIDField(), required=False,
                                        max_length=conversations.MAX_COLLECTIONS)  # fmt: skip


def conversation_json(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": str(conversation.pk), "title": str(conversation), "pinned": conversation.pinned,
        "model": conversation.model, "collections": [
            {"id": str(c.pk), "name": c.name} for c in conversation.collections.order_by("name")
        ],
        "created_at": conversation.created_at.isoformat(), "updated_at": conversation.updated_at.isoformat(),
    }  # fmt: skip


def message_json(turn: dict[str, Any]) -> dict[str, Any]:
    message = turn["message"]
    return {
        "id": str(message.pk), "role": message.role, "status": message.status, "content": turn["text"],
        "html": str(turn["html"]) if turn["html"] else None, "model": message.model, "engine": message.engine,
        "citations": turn["citations"], "error": message.error or None,
        "rating": {1: "up", -1: "down"}.get(turn["rating"] or 0), "created_at": message.created_at.isoformat(),
    }  # fmt: skip


class ConversationViewSet(OrgScopedViewSet):
    """The signed-in member's conversations. `html` in a message is its Markdown rendered and sanitised."""

    model = Conversation
    required_scopes = {"list": ASK, "create": ASK, "retrieve": ASK, "partial_update": ASK, "destroy": ASK}

    def safely_get_queryset(self, queryset: Any) -> Any:
        # A key has no person: it sees no conversation (another's is a 404, as for another org's).
        user = self.request.principal.user  # type: ignore[attr-defined]
        return queryset.filter(user=user).prefetch_related("collections") if user else queryset.none()

    @extend_schema(
        responses={200: OpenApiTypes.OBJECT}, operation_id="conversations_list",
        parameters=[OpenApiParameter("q", str, description="Words the title contains")],
    )  # fmt: skip
    def list(self, request: Request) -> Response:
        user = request.principal.user  # type: ignore[attr-defined]
        query = request.query_params.get("q", "")[:200]
        found = conversations.conversation_list(org=request.org, user=user, query=query) if user else []  # type: ignore[attr-defined]
        return Response({"results": [conversation_json(c) for c in found]})

    @extend_schema(request=ConversationIn, responses={201: OpenApiTypes.OBJECT})
    def create(self, request: Request) -> Response:
        if request.principal.user is None:  # type: ignore[attr-defined]
            raise PermissionDenied(
                "Conversations belong to a person: sign in to start one (an API key asks through /api/v1/ask).",
                code="person_only",
            )
        data = ConversationIn(data=request.data)
        data.is_valid(raise_exception=True)
        conversation = conversations.conversation_start(
            org=request.org, user=request.user, collection_ids=data.validated_data["collections"],  # type: ignore[attr-defined]
            model=data.validated_data["model"],
        )  # fmt: skip
        return Response(conversation_json(conversation), status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def retrieve(self, request: Request, pk: str) -> Response:
        conversation = self.get_object()
        body = conversation_json(conversation)
        body["messages"] = [message_json(t) for t in conversations.turns(conversation=conversation, user=request.user)]
        return Response(body)

    @extend_schema(request=ConversationPatch, responses={200: OpenApiTypes.OBJECT})
    def partial_update(self, request: Request, pk: str) -> Response:
        conversation = self.get_object()  # 404 before validation
        data = ConversationPatch(data=request.data)
        data.is_valid(raise_exception=True)
        conversation = conversations.conversation_update(
            conversation=conversation, title=data.validated_data.get("title"),
            pinned=data.validated_data.get("pinned"), collection_ids=data.validated_data.get("collections"),
        )  # fmt: skip
        return Response(conversation_json(conversation))

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        conversations.conversation_delete(conversation=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
