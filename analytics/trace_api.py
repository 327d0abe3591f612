"""Traces in the API: `GET /api/v1/traces` (filtered, in cursor pages) and `GET /api/v1/traces/{id}` (one trace
with its spans). Admins and owners, or API keys with the admin scope, as for the request log. Thin: parse,
call a selector (analytics/traces.py), render."""

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.permissions import ADMIN
from analytics import traces
from saas.core.api import OrgScopedViewSet, StrictSerializer
from saas.llm.models import Trace


class TraceFilterIn(StrictSerializer):
    kind = serializers.ChoiceField(required=False, allow_blank=True, choices=Trace.Kind.values)
    status = serializers.ChoiceField(required=False, allow_blank=True, choices=Trace.Status.values)
    member = serializers.UUIDField(required=False, allow_null=True)
    key = serializers.UUIDField(required=False, allow_null=True)
    subject = serializers.CharField(required=False, allow_blank=True, max_length=64)
    since = serializers.DateTimeField(required=False, allow_null=True)
    until = serializers.DateTimeField(required=False, allow_null=True)
    q = serializers.CharField(required=False, allow_blank=True, max_length=200)
    cursor = serializers.CharField(required=False)
    page_size = serializers.IntegerField(required=False)  # checked by the paginator

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        since, until = attrs.get("since"), attrs.get("until")
        if since and until and since >= until:
            raise serializers.ValidationError({"until": ["Must be later than `since`."]})
        return attrs

    @classmethod
    def from_query(cls, query: Any) -> traces.TraceFilters:
        """The filters of a query string (empty values do not filter); a bad value raises the API's 400."""
        given = {name: value for name, value in query.dict().items() if value != ""}
        parsed = cls(data=given)
        parsed.is_valid(raise_exception=True)
        data = parsed.validated_data
        return traces.TraceFilters(
            kind=data.get("kind", ""), status=data.get("status", ""), member=data.get("member"), key=data.get("key"),
            subject=data.get("subject", ""), since=data.get("since"), until=data.get("until"), search=data.get("q", ""),
        )  # fmt: skip


class TraceTokensOut(serializers.Serializer):
    prompt = serializers.IntegerField()
    completion = serializers.IntegerField()
    total = serializers.IntegerField(required=False)


class TraceKeyOut(serializers.Serializer):
    id = serializers.UUIDField()
    prefix = serializers.CharField()
    name = serializers.CharField()


class TraceOut(serializers.Serializer):
    id = serializers.UUIDField()
    kind = serializers.CharField(help_text="ask, chat, generate, completion or crew_run")
    name = serializers.CharField()
    status = serializers.CharField(help_text="ok, error or cancelled")
    error = serializers.CharField(help_text="The error's kind; empty when it went well.")
    subject_id = serializers.CharField(allow_null=True, help_text="The crew run or chat message it is about.")
    started_at = serializers.DateTimeField()
    duration_ms = serializers.IntegerField()
    llm_calls = serializers.IntegerField(help_text="Model calls (chat and embeddings) in the trace.")
    tokens = TraceTokensOut()
    cost_usd = serializers.CharField()
    request_id = serializers.CharField()
    member = serializers.EmailField(allow_null=True)
    key = TraceKeyOut(allow_null=True)


class SpanOut(serializers.Serializer):
    seq = serializers.IntegerField()
    parent_seq = serializers.IntegerField(allow_null=True)
    kind = serializers.CharField(help_text="step, retrieval, llm or tool")
    name = serializers.CharField()
    start_ms = serializers.IntegerField(help_text="From the trace's start.")
    end_ms = serializers.IntegerField()
    latency_ms = serializers.IntegerField()
    status = serializers.CharField()
    llm_call_id = serializers.UUIDField(allow_null=True, help_text="A model call's row in /api/v1/requests.")
    tokens = TraceTokensOut()
    cost_usd = serializers.CharField()
    attributes = serializers.JSONField(
        help_text="retrieval: passages (chunk and document ids, scores); llm: model, cache, operation, time to "
        "first token; tool: tool, agent."
    )


class TraceDetailOut(TraceOut):
    spans = SpanOut(many=True)


_FILTERS = [
    OpenApiParameter("kind", str, enum=Trace.Kind.values),
    OpenApiParameter("status", str, enum=Trace.Status.values),
    OpenApiParameter("member", str, description="A member's user id."),
    OpenApiParameter("key", str, description="An API key's id."),
    OpenApiParameter("subject", str, description="A crew run's or chat message's id."),
    OpenApiParameter("since", str, description="ISO 8601 time, inclusive."),
    OpenApiParameter("until", str, description="ISO 8601 time, exclusive."),
    OpenApiParameter("q", str, description="Words of the trace's name, or a trace, subject or request id."),
]


class TraceViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):
    """One trace per ask, chat turn, generate call, chat completion and crew run: its spans (retrieval, model
    calls, tool calls, task steps) with their latency, tokens and cost."""

    model = Trace
    serializer_class = TraceOut
    ordering = "-started_at"
    required_scopes = {"list": ADMIN, "retrieve": ADMIN}

    @extend_schema(parameters=_FILTERS, responses=TraceOut(many=True))
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        filters = TraceFilterIn.from_query(request.query_params)
        page = self.paginate_queryset(traces.trace_list(org=request.org, filters=filters))  # type: ignore[attr-defined]
        return self.get_paginated_response([traces.trace_json(trace) for trace in page or []])

    @extend_schema(responses=TraceDetailOut)
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        trace = traces.trace_get(org=request.org, trace_id=kwargs["pk"])  # type: ignore[attr-defined]
        spans = traces.trace_spans(trace=trace)
        return Response({**traces.trace_json(trace), "spans": [traces.span_json(span) for span in spans]})
