"""The dashboards in the API: /api/v1/insights (analytics/insights.py computes the figures)."""

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from analytics import insights
from saas.core.api import OrgScopedAPIView
from saas.core.errors import ApplicationError
from saas.llm.selectors import prompt_visible


class InsightsView(OrgScopedAPIView):
    """The dashboards' figures over a range: requests, errors by kind, latency and time to first token (p50/p95,
    from fixed buckets) per model and feature, tokens and cost, cache hits and money saved, feedback rate and
    thumbs-down share, the groundedness distribution and the top failing questions (when the org's policy lets
    the caller read prompts). Admins only. `range` is 24h, 7d (default) or 30d; or `start` and `end`, whole UTC
    days (YYYY-MM-DD, inclusive, at most 92 days)."""

    required_scopes = {"get": "admin"}

    @extend_schema(
        parameters=[
            OpenApiParameter("range", OpenApiTypes.STR, enum=list(insights.RANGES)),
            OpenApiParameter("start", OpenApiTypes.DATE),
            OpenApiParameter("end", OpenApiTypes.DATE),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        org: Any = request.org  # type: ignore[attr-defined]
        params = request.query_params
        for name in ("range", "start", "end"):
            if name in params and not params[name]:  # given but empty: a client's mistake, not the default
                raise ApplicationError(f"`{name}` is empty; leave it out or give a value.", code="invalid",
                                       details={"fields": {name: ["This field may not be blank."]}})  # fmt: skip
        rng = insights.range_parse(key=params.get("range", ""), start=params.get("start", ""),
                                   end=params.get("end", ""))  # fmt: skip
        data = insights.insights_get(org=org, rng=rng)
        visible = prompt_visible(principal=request.principal)  # type: ignore[attr-defined]
        data["failing_questions"] = insights.failing_questions(org=org, rng=rng) if visible else None
        return Response(data)
