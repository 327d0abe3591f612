from collections.abc import Callable
from functools import partial
from typing import Any

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


def _rated(
    request: Request, give: Callable[..., Feedback], answer_key: str, answer_id: Callable[[Feedback], Any]
) -> Response:
    """Validate a rating, save it with `give(rating=..., comment=...)`, and answer 201 with what was saved."""
    data = FeedbackIn(data=request.data)
    data.is_valid(raise_exception=True)
    rating = data.validated_data["rating"]
    feedback = give(
        rating=Feedback.Rating.UP if rating == "up" else Feedback.Rating.DOWN, comment=data.validated_data["comment"]
    )
    body = {"id": str(feedback.pk), answer_key: str(answer_id(feedback)), "rating": rating, "comment": feedback.comment}
    return Response(body, status=status.HTTP_201_CREATED)


class MessageFeedbackView(OrgScopedAPIView):
    """Thumbs up or down on an assistant message (one per person: a second rating replaces the first)."""

    model = Message
    required_scopes = {"post": ASK}

    @extend_schema(request=FeedbackIn, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request, pk: str) -> Response:
        principal = request.principal  # type: ignore[attr-defined]
        services.answer_get(org=principal.organization, message_id=pk, user=principal.user)  # 404 before validation
        give = partial(services.feedback_give, org=principal.organization, message_id=pk, user=principal.user,
                       api_key=principal.api_key)  # fmt: skip
        return _rated(request, give, "message", lambda feedback: feedback.message_id)


class ResponseFeedbackView(OrgScopedAPIView):
    """Thumbs up or down on any other answer (an ask response), by the `id` it came with."""

    model = LLMCall
    required_scopes = {"post": ASK}

    @extend_schema(request=FeedbackIn, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request, pk: str) -> Response:
        principal = request.principal  # type: ignore[attr-defined]
        who = {"user": principal.user, "api_key": principal.api_key}
        services.response_get(org=principal.organization, call_id=pk, **who)  # 404 before validation
        give = partial(services.response_feedback_give, org=principal.organization, call_id=pk, **who)
        return _rated(request, give, "response", lambda feedback: feedback.llm_call_id)
