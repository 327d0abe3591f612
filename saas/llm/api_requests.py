"""The request log in the API: `GET /api/v1/requests` (the gateway's ledger, filtered, in cursor pages) and
`GET /api/v1/requests/{id}` (one call; its masked prompt and answer only where the org's policy allows).
Admins and owners, or API keys with the admin scope. Thin: parse, call a selector, render."""

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import mixins, serializers
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.permissions import ADMIN
from saas.core.api import OrgScopedViewSet, StrictSerializer
from saas.core.errors import NotFound
from saas.llm import selectors
from saas.llm.models import LLMCall


class RequestLogFilterIn(StrictSerializer):
    """The filters of the request log, from a query string (the API's and the page's)."""

    feature = serializers.CharField(required=False, allow_blank=True, max_length=16)
    model = serializers.CharField(required=False, allow_blank=True, max_length=64)
    provider = serializers.CharField(required=False, allow_blank=True, max_length=32)
    status = serializers.ChoiceField(required=False, allow_blank=True, choices=LLMCall.Status.values)
    cache = serializers.ChoiceField(required=False, allow_blank=True, choices=LLMCall.Cache.values)
    key = serializers.CharField(required=False, allow_blank=True, max_length=64)
    member = serializers.CharField(required=False, allow_blank=True, max_length=254)
    since = serializers.DateTimeField(required=False, allow_null=True)
    until = serializers.DateTimeField(required=False, allow_null=True)
    guarded = serializers.BooleanField(required=False, default=False)
    cursor = serializers.CharField(required=False)
    page_size = serializers.IntegerField(required=False)  # checked by the paginator

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        since, until = attrs.get("since"), attrs.get("until")
        if since and until and since >= until:
            raise serializers.ValidationError({"until": ["Must be later than `since`."]})
        return attrs

    def filters(self) -> selectors.RequestLogFilters:
        data = {name: value for name, value in self.validated_data.items() if name not in ("cursor", "page_size")}
        return selectors.RequestLogFilters(**{name: value for name, value in data.items() if value is not None})

    @classmethod
    def from_query(cls, query: Any) -> selectors.RequestLogFilters:
        """The filters of a query string; a bad value raises the API's 400 (ValidationError)."""
        # Empty fields are what a submitted form sends for "any": they do not filter (and are not errors).
        given = {name: value for name, value in query.dict().items() if value != ""}
        filters = cls(data=given)
        filters.is_valid(raise_exception=True)
        return filters.filters()


class KeyOut(serializers.Serializer):
    id = serializers.UUIDField()
    prefix = serializers.CharField()
    name = serializers.CharField()


class OriginOut(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["crew_run", "conversation", "ask"],
                                   help_text="crew_run, conversation, or ask (an ask's answer is this call: its "
                                   "feedback endpoint takes this id).")  # fmt: skip
    id = serializers.CharField()
    url = serializers.CharField(allow_null=True, help_text="The page showing it, if there is one.")


class TokensOut(serializers.Serializer):
    prompt = serializers.IntegerField(source="prompt_tokens")
    completion = serializers.IntegerField(source="completion_tokens")
    total = serializers.SerializerMethodField()
    estimated = serializers.BooleanField(source="tokens_estimated")

    @extend_schema_field(serializers.IntegerField())
    def get_total(self, call: LLMCall) -> int:
        return call.prompt_tokens + call.completion_tokens


def guardrail_outcome(call: LLMCall) -> str:
    actions = {finding.get("action") for finding in call.guardrails if isinstance(finding, dict)}
    return "blocked" if "blocked" in actions else ("flagged" if actions else "none")


class RequestOut(serializers.Serializer):
    id = serializers.UUIDField()
    created_at = serializers.DateTimeField()
    feature = serializers.CharField()
    status = serializers.CharField()
    error = serializers.CharField(source="error_class", help_text="The error's kind; empty when it went well.")
    model_requested = serializers.CharField()
    model = serializers.CharField(source="model_used", help_text="The model that answered (after fallbacks).")
    provider = serializers.CharField(source="upstream", help_text="The upstream that answered.")
    stream = serializers.BooleanField()
    latency_ms = serializers.IntegerField()
    ttft_ms = serializers.IntegerField(allow_null=True)
    tokens = TokensOut(source="*")
    cost_usd = serializers.DecimalField(max_digits=14, decimal_places=8)
    cost_saved_usd = serializers.DecimalField(max_digits=14, decimal_places=8)
    cache = serializers.CharField(help_text="miss, exact, semantic or bypass")
    guardrail_outcome = serializers.SerializerMethodField(help_text="none, flagged or blocked")
    guardrails = serializers.JSONField(help_text="The guardrails' findings.")
    pii_masked = serializers.IntegerField(help_text="Personal data items masked before the call left.")
    fallbacks_taken = serializers.IntegerField()
    key = KeyOut(source="api_key", allow_null=True)
    member = serializers.EmailField(source="user.email", allow_null=True, default=None)
    request_id = serializers.CharField()
    trace_id = serializers.CharField()
    origin = serializers.SerializerMethodField()

    @extend_schema_field(serializers.ChoiceField(choices=["none", "flagged", "blocked"]))
    def get_guardrail_outcome(self, call: LLMCall) -> str:
        return guardrail_outcome(call)

    @extend_schema_field(OriginOut(allow_null=True))
    def get_origin(self, call: LLMCall) -> dict[str, Any] | None:
        origin = self.context.get("origins", {}).get(call.pk)
        return None if origin is None else {"kind": origin.kind, "id": origin.id, "url": origin.url}


class MessageOut(serializers.Serializer):
    role = serializers.CharField()
    content = serializers.JSONField()


class RequestDetailOut(RequestOut):
    attempts = serializers.JSONField(help_text="Every attempt (retries, fallbacks) with its model and status.")
    content_visible = serializers.BooleanField(
        help_text="Whether the org's policy (prompt_visibility in the AI settings) lets you read the prompt and "
        "answer; when false they are null."
    )
    prompt = serializers.CharField(allow_null=True, help_text="As stored: personal data masked.")
    messages = MessageOut(many=True, allow_null=True, help_text="The prompt's messages, for chat calls.")
    answer = serializers.CharField(allow_null=True, help_text="As stored: personal data masked.")


_FILTERS = [
    OpenApiParameter("feature", str, description="ask, chat, crew, generate, ingest, ..."),
    OpenApiParameter("model", str, description="A model alias: the one asked for or the one that answered."),
    OpenApiParameter("provider", str, description="The upstream that answered, e.g. openai or local."),
    OpenApiParameter("status", str, enum=LLMCall.Status.values),
    OpenApiParameter("cache", str, enum=LLMCall.Cache.values),
    OpenApiParameter("key", str, description="An API key's id or prefix."),
    OpenApiParameter("member", str, description="A member's id (as in /api/v1/members) or email."),
    OpenApiParameter("since", str, description="ISO 8601 time, inclusive."),
    OpenApiParameter("until", str, description="ISO 8601 time, exclusive."),
    OpenApiParameter("guarded", bool, description="Only calls the guardrails flagged or blocked."),
]


class RequestLogViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):
    """The org's AI requests from the gateway's ledger, newest first: latency, tokens, cost, cache and
    guardrail outcomes, and the crew run, conversation or ask each belongs to."""

    model = LLMCall
    serializer_class = RequestOut
    ordering = "-created_at"
    required_scopes = {"list": ADMIN, "retrieve": ADMIN}

    @extend_schema(parameters=_FILTERS)
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        org = request.org  # type: ignore[attr-defined]
        filters = RequestLogFilterIn.from_query(request.query_params)
        page = self.paginate_queryset(selectors.llm_call_list(org=org, filters=filters))
        origins = selectors.call_origins(org=org, calls=page or [])
        return self.get_paginated_response(RequestOut(page, many=True, context={"origins": origins}).data)

    @extend_schema(responses=RequestDetailOut)
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        org = request.org  # type: ignore[attr-defined]
        if not selectors.is_uuid(kwargs["pk"]):
            raise NotFound("No such request.")
        call = selectors.llm_call_get(org=org, call_id=kwargs["pk"])
        origins = selectors.call_origins(org=org, calls=[call])
        data = dict(RequestOut(call, context={"origins": origins}).data)
        visible = selectors.prompt_visible(principal=request.principal)  # type: ignore[attr-defined]
        content = selectors.llm_call_content(call=call) if visible else None
        data |= {
            "attempts": call.attempts,
            "content_visible": visible,
            "prompt": content.prompt if content else None,
            "messages": content.messages if content else None,
            "answer": content.answer if content else None,
        }
        return Response(data)
