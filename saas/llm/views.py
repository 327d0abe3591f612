"""The gateway's pages: its sections of the team's settings page (templates/llm/pii_settings.html and
guardrails_settings.html) and the request log."""

import re
from typing import Any

from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.request import Request
from rest_framework.views import APIView

from accounts.authentication import request_origin
from accounts.permissions import ADMIN, OWNER
from accounts.selectors import api_key_list, member_list
from accounts.views import OrgHttpRequest, org_page, run_service
from saas.core.pagination import StableCursorPagination
from saas.llm import config, selectors, services
from saas.llm.api_requests import RequestLogFilterIn, guardrail_outcome
from saas.llm.models import LLMCall

_LIST_SEPARATORS = re.compile(r"[\s,;]+")


@org_page(ADMIN)
@require_POST
def org_pii_policy(request: OrgHttpRequest) -> HttpResponse:
    """The form sends the policy, the phone regions ("US, GB") and the names checkbox (a hidden "0" before the
    box, so that an unticked box reads as off); a field the form did not send is left as it is."""
    policy = request.POST.get("pii_policy")
    regions_text = request.POST.get("pii_phone_regions")
    regions = None if regions_text is None else [r for r in _LIST_SEPARATORS.split(regions_text) if r]
    names = request.POST.getlist("pii_mask_names")
    origin = request_origin(request)
    run_service(request, lambda: services.pii_policy_set(
        principal=request.principal, policy=policy, phone_regions=regions,
        mask_names=None if not names else names[-1] in ("1", "on", "true"), origin=origin,
    ), "Saved.")  # fmt: skip
    return redirect("org-settings", org_slug=request.org.slug)


@org_page(ADMIN)
@require_POST
def org_guardrails(request: OrgHttpRequest) -> HttpResponse:
    def lines(name: str) -> list[str]:
        return request.POST.get(name, "").splitlines()

    changes = {
        "injection_guard": request.POST.get("injection_guard", ""),
        "moderation_guard": request.POST.get("moderation_guard", ""),
        "denied_keywords": lines("denied_keywords"),
        "denied_topics": lines("denied_topics"),
    }
    origin = request_origin(request)
    run_service(request, lambda: services.guardrails_set(principal=request.principal, changes=changes, origin=origin),
                "Saved.")  # fmt: skip
    return redirect(f"{reverse('org-settings', args=[request.org.slug])}#guardrails")


@org_page(OWNER)
@require_POST
def org_prompt_visibility(request: OrgHttpRequest) -> HttpResponse:
    visibility = request.POST.get("prompt_visibility", "")
    origin = request_origin(request)
    run_service(request, lambda: services.prompt_visibility_set(principal=request.principal, visibility=visibility,
                                                                origin=origin), "Saved.")  # fmt: skip
    return redirect(f"{reverse('org-settings', args=[request.org.slug])}#request-log-policy")


class _LogPage(APIView):
    """What the API's cursor paginator reads from a view: the ordering."""

    ordering = "-created_at"


@org_page(ADMIN)
def request_log(request: OrgHttpRequest) -> HttpResponse:
    """The team's AI requests from the ledger, filtered as in GET /api/v1/requests and in cursor pages: who
    asked which model, with what outcome, tokens, cost, time, cache and guardrail findings. A row opens the
    call (request_detail)."""
    calls: list[LLMCall] = []
    errors: dict[str, Any] = {}
    links: dict[str, str | None] = {"next": None, "previous": None}
    try:
        filters = RequestLogFilterIn.from_query(request.GET)
        paginator = StableCursorPagination()
        page = paginator.paginate_queryset(selectors.llm_call_list(org=request.org, filters=filters),
                                           Request(request), view=_LogPage())  # fmt: skip
        calls = list(page or [])
        links = {"next": paginator.get_next_link(), "previous": paginator.get_previous_link()}
    except ValidationError as exc:
        errors = {name: " ".join(str(m) for m in messages) for name, messages in _fields(exc.detail).items()}
    except APIException as exc:  # a cursor that is not one of ours
        errors = {"cursor": str(exc.detail)}
    origins = selectors.call_origins(org=request.org, calls=calls)
    traced = selectors.traces_recorded(org=request.org, ids=[call.trace_id for call in calls])
    rows = [{"call": call, "origin": origins.get(call.pk), "outcome": guardrail_outcome(call),
             "trace": call.trace_id if call.trace_id in traced else None} for call in calls]  # fmt: skip
    return render(request, "llm/request_log.html", {
        "rows": rows, "errors": errors, "query": request.GET, "links": links,
        "filtered": any(value for name, value in request.GET.items() if name not in ("cursor", "page_size")),
        "statuses": LLMCall.Status.choices, "caches": LLMCall.Cache.choices,
        "choices": selectors.llm_call_filter_choices(org=request.org),
        "members": member_list(org=request.org), "keys": api_key_list(org=request.org),
        "visibility": config.current().policy(request.org).get_prompt_visibility_display(),
    })  # fmt: skip


def _fields(detail: Any) -> dict[str, Any]:
    return detail if isinstance(detail, dict) else {"filters": detail}


@org_page(ADMIN)
def request_detail(request: OrgHttpRequest, call_id: Any) -> HttpResponse:
    """One call: its figures, every attempt, the guardrails' findings, where it came from, and its masked prompt
    and answer if the org's policy lets this member read them."""
    call = selectors.llm_call_get(org=request.org, call_id=call_id)
    visible = selectors.prompt_visible(principal=request.principal)
    return render(request, "llm/request_detail.html", {
        "call": call, "origin": selectors.call_origins(org=request.org, calls=[call]).get(call.pk),
        "outcome": guardrail_outcome(call), "visible": visible,
        "trace": call.trace_id if selectors.traces_recorded(org=request.org, ids=[call.trace_id]) else None,
        "content": selectors.llm_call_content(call=call) if visible else None,
        "visibility": config.current().policy(request.org).get_prompt_visibility_display(),
    })  # fmt: skip
