from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.permissions import ASK
from agents import services
from agents.models import Feedback, Message
from saas.core.api import OrgScopedAPIView, StrictSerializer
from saas.llm.models import LLMCall


class FeedbackIn(StrictSerializer):
    rating = serializers.ChoiceField(choices=["up", "down"])
    comment = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


class MessageFeedbackView(OrgScopedAPIView):
    """Thumbs up or down on an assistant message (one per person: a second rating replaces the first)."""

    model = Message
    required_scopes = {"post": ASK}

    @extend_schema(request=FeedbackIn, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request, pk: str) -> Response:
        principal = request.principal  # type: ignore[attr-defined]
        services.answer_get(org=principal.organization, message_id=pk, user=principal.user)  # 404 before validation
        data = FeedbackIn(data=request.data)
        data.is_valid(raise_exception=True)
        feedback = services.feedback_give(
            org=principal.organization,
            message_id=pk,
            rating=Feedback.Rating.UP if data.validated_data["rating"] == "up" else Feedback.Rating.DOWN,
            comment=data.validated_data["comment"],
            user=principal.user,
            api_key=principal.api_key,
        )
        body = {"id": str(feedback.pk), "message": str(feedback.message_id), "rating": data.validated_data["rating"],
                "comment": feedback.comment}  # fmt: skip
        return Response(body, status=status.HTTP_201_CREATED)


class ResponseFeedbackView(OrgScopedAPIView):
    """Thumbs up or down on any other answer (an ask response), by the `id` it came with."""

    model = LLMCall
    required_scopes = {"post": ASK}

    @extend_schema(request=FeedbackIn, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request, pk: str) -> Response:
        principal = request.principal  # type: ignore[attr-defined]
        services.response_get(  # 404 before validation
            org=principal.organization, call_id=pk, user=principal.user, api_key=principal.api_key
        )
        data = FeedbackIn(data=request.data)
        data.is_valid(raise_exception=True)
        feedback = services.response_feedback_give(
            org=principal.organization,
            call_id=pk,
            rating=Feedback.Rating.UP if data.validated_data["rating"] == "up" else Feedback.Rating.DOWN,
            comment=data.validated_data["comment"],
            user=principal.user,
            api_key=principal.api_key,
        )
        body = {"id": str(feedback.pk), "response": str(feedback.llm_call_id), "rating": data.validated_data["rating"],
                "comment": feedback.comment}  # fmt: skip
        return Response(body, status=status.HTTP_201_CREATED)
