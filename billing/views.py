"""The billing page: the plan, this period's usage against the allowance, the projected bill, the plans."""

from django.conf import settings
from django.http import HttpResponse
from django.shortcuts import render

from accounts.permissions import ADMIN
from accounts.views import OrgHttpRequest, org_page
from billing import selectors
from billing.models import Plan


@org_page(ADMIN)
def billing_page(request: OrgHttpRequest) -> HttpResponse:
    usage = selectors.usage_summary(org=request.org)
    requests = usage["ai_requests"]
    percent = min(100, round(100 * requests["used"] / requests["included"])) if requests["included"] else 100
    return render(request, "billing/billing.html", {
        "usage": usage, "percent": percent, "plans": Plan.objects.all(),
        "stripe_configured": bool(settings.STRIPE_SECRET_KEY), "is_owner": request.principal.has("owner"),
    })  # fmt: skip
