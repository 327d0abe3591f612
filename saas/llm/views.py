"""The gateway's settings on the team's settings page (the section is templates/llm/pii_settings.html)."""

from django.http import HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from accounts.authentication import request_origin
from accounts.permissions import ADMIN
from accounts.views import OrgHttpRequest, org_page, run_service
from saas.llm import services


@org_page(ADMIN)
@require_POST
def org_pii_policy(request: OrgHttpRequest) -> HttpResponse:
    policy = request.POST.get("pii_policy", "")
    origin = request_origin(request)
    run_service(request, lambda: services.pii_policy_set(principal=request.principal, policy=policy, origin=origin),
                "Saved.")  # fmt: skip
    return redirect("org-settings", org_slug=request.org.slug)
