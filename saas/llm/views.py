"""The gateway's settings on the team's settings page (the section is templates/llm/pii_settings.html)."""

import re

from django.http import HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from accounts.authentication import request_origin
from accounts.permissions import ADMIN
from accounts.views import OrgHttpRequest, org_page, run_service
from saas.llm import services

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
