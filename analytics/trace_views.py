"""The trace pages: the list (`/o/<org>/traces/`, searched and filtered, in pages) and one trace drawn as a
timeline (`/o/<org>/traces/<id>/`). Admins and owners, as the request log. Thin: the selectors and the
timeline's geometry are in analytics/traces.py."""

from typing import Any

from django.http import HttpResponse
from django.shortcuts import render
from rest_framework.exceptions import ValidationError

from accounts.permissions import ADMIN
from accounts.selectors import member_list
from accounts.views import OrgHttpRequest, org_page
from analytics import traces
from analytics.trace_api import TraceFilterIn
from saas.core.paging import table_page
from saas.llm.models import Trace

TRACES_PER_PAGE = 25


@org_page(ADMIN)
def trace_list_page(request: OrgHttpRequest) -> HttpResponse:
    errors: dict[str, Any] = {}
    query = request.GET.copy()
    query.pop("page", None)
    try:
        filters = TraceFilterIn.from_query(query)
    except ValidationError as exc:
        detail = exc.detail if isinstance(exc.detail, dict) else {"filters": exc.detail}
        errors = {name: " ".join(str(m) for m in messages) for name, messages in detail.items()}
        filters = None
    table = table_page(request, traces.trace_list(org=request.org, filters=filters) if filters else
                       Trace.objects.for_org(request.org).none(), per_page=TRACES_PER_PAGE)  # fmt: skip
    return render(request, "analytics/traces.html", {
        "table": table, "query": request.GET, "errors": errors, "kinds": Trace.Kind.choices,
        "statuses": Trace.Status.choices, "members": member_list(org=request.org),
        "filtered": any(value for name, value in request.GET.items() if name != "page"),
    })  # fmt: skip


@org_page(ADMIN)
def trace_detail_page(request: OrgHttpRequest, trace_id: Any) -> HttpResponse:
    trace = traces.trace_get(org=request.org, trace_id=trace_id)
    return render(request, "analytics/trace.html", {"timeline": traces.timeline(org=request.org, trace=trace)})
