"""The billing page (the plan, this period's usage against the allowance, the projected bill, invoices, the
plans), and the owners' buttons to Stripe Checkout and the customer portal."""

from datetime import timedelta

from django.conf import settings
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts.permissions import ADMIN, OWNER
from accounts.views import OrgHttpRequest, org_page, run_service
from billing import payments, selectors, services
from billing.chart_context import usage_charts
from billing.models import Plan


@org_page(ADMIN)
def billing_page(request: OrgHttpRequest) -> HttpResponse:
    usage = selectors.usage_summary(org=request.org)
    requests = usage["ai_requests"]
    percent = min(100, round(100 * requests["used"] / requests["included"])) if requests["included"] else 100
    state = selectors.billing_state(org=request.org)
    return render(request, "billing/billing.html", {
        "usage": usage, "percent": percent, "plans": Plan.objects.all(), "state": state,
        "usage_charts": usage_charts(org=request.org),
        "subscribed": payments.subscribed(state),
        "invoices": selectors.invoice_list(org=request.org), "checkout": request.GET.get("checkout", ""),
        "stripe_configured": payments.stripe_configured(), "is_owner": request.principal.has(OWNER),
        "paused_from": state.billing.past_due_since + timedelta(days=settings.BILLING_PAST_DUE_GRACE_DAYS)
        if state.billing and state.billing.past_due_since else None,
    })  # fmt: skip


def _return_url(request: OrgHttpRequest) -> str:
    # The configured public address, not the request's Host header: Stripe sends the customer back here.
    return f"{settings.SITE_URL}{reverse('billing', kwargs={'org_slug': request.org.slug})}"


@require_POST
@org_page(OWNER)
def checkout(request: OrgHttpRequest) -> HttpResponse:
    url = run_service(request, lambda: payments.checkout_start(
        org=request.org, plan_slug=request.POST.get("plan", ""), user=request.user,
        return_url=_return_url(request)))  # fmt: skip
    return redirect(url or _return_url(request))


@require_POST
@org_page(OWNER)
def portal(request: OrgHttpRequest) -> HttpResponse:
    url = run_service(request, lambda: payments.portal_start(org=request.org, return_url=_return_url(request)))
    return redirect(url or _return_url(request))


@require_POST
@org_page(OWNER)
def spend_cap(request: OrgHttpRequest) -> HttpResponse:
    run_service(request, lambda: services.spend_cap_set(
        org=request.org, principal=request.principal, value=request.POST.get("spend_cap_usd", "")),
        success="Spend cap saved.")  # fmt: skip
    return redirect("billing", org_slug=request.org.slug)
