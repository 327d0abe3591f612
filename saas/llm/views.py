"""The gateway's pages: its sections of the team's settings page (templates/llm/pii_settings.html and
guardrails_settings.html) and the request log."""

import re

from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts.authentication import request_origin
from accounts.permissions import ADMIN
from accounts.views import OrgHttpRequest, org_page, run_service
from saas.llm import selectors, services
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


@org_page(ADMIN)
def request_log(request: OrgHttpRequest) -> HttpResponse:
    """The team's recent AI requests from the ledger: what was asked of which model, what it cost, how long it
    took, and what the guardrails found."""
    status = request.GET.get("status", "")
    calls = selectors.llm_call_list(org=request.org, status=status or None, guarded=request.GET.get("guarded") == "1")
    return render(request, "llm/request_log.html", {"calls": calls, "status": status,
                                                    "statuses": LLMCall.Status.choices,
                                                    "guarded": request.GET.get("guarded") == "1"})  # fmt: skip
