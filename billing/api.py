import re
from datetime import date
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from billing import selectors, usage_series
from saas.core.api import OrgScopedAPIView
from saas.core.errors import ApplicationError


class UsageView(OrgScopedAPIView):
    """This billing period's AI requests (used, included, left), cache hits, model cost and projected bill,
    per feature and per model."""

    required_scopes = {"get": "read"}

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request) -> Response:
        return Response(selectors.usage_summary(org=request.org))  # type: ignore[attr-defined]


def _day(request: Request, name: str, default: date) -> date:
    if name not in request.query_params:
        return default
    value = request.query_params[name]
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):  # ISO's full date only (fromisoformat takes more)
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise ApplicationError(f"{name} is a date, written YYYY-MM-DD.", code="invalid",
                               details={"fields": {name: ["Write a date as YYYY-MM-DD."]}}) from None  # fmt: skip


class UsageDailyView(OrgScopedAPIView):
    """AI requests, cache hits and model cost per UTC day, and per feature, model, member and key, over a range
    of at most 92 days (default: this billing period): what the billing page's charts draw."""

    required_scopes = {"get": "read"}

    @extend_schema(
        parameters=[OpenApiParameter("start", OpenApiTypes.DATE), OpenApiParameter("end", OpenApiTypes.DATE)],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        org: Any = request.org  # type: ignore[attr-defined]
        state = selectors.billing_state(org=org)
        first, last = usage_series.period_days(start=state.period_start, end=state.period_end)
        start, end = _day(request, "start", first), _day(request, "end", last)
        breakdowns = {
            f"by_{by}": [{"label": row["label"], "ai_requests": row["ai_requests"], "cost_usd": f"{row['cost_usd']:f}"}
                         for row in usage_series.usage_breakdown(org=org, by=by, start=start, end=end)]
            for by in usage_series.BREAKDOWNS
        }  # fmt: skip
        days = usage_series.usage_daily(org=org, start=start, end=end)
        return Response({"start": start.isoformat(), "end": end.isoformat(),
                         "days": [day.as_json() for day in days], **breakdowns})  # fmt: skip
