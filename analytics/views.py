"""The Overview (`/o/<org>/`): getting started, the team's activity in words, recent runs and this period's
usage; loading the sample documents; hiding the checklist. The Insights dashboards (`/o/<org>/insights/`)."""

from datetime import datetime, timedelta

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts import services as account_services
from accounts.permissions import ADMIN, DOCUMENTS_WRITE, READ
from accounts.views import OrgHttpRequest, org_page, run_service
from analytics import insights, overview, samples
from analytics.chart_context import insights_charts
from billing import selectors as billing_selectors
from billing.chart_context import usage_charts
from saas.core.errors import ApplicationError
from saas.llm.selectors import prompt_visible


@org_page(READ)
def overview_page(request: OrgHttpRequest) -> HttpResponse:
    org, principal = request.org, request.principal
    usage = billing_selectors.usage_totals(org=org)
    requests = usage["ai_requests"]
    facts = overview.team_facts(org=org)  # the checklist's ticks and the member count, in one query
    runs = overview.latest_runs(org=org, limit=overview.ACTIVITY_LIMIT)  # the activity's runs and the recent ones
    return render(request, "accounts/dashboard.html", {
        "onboarding": overview.onboarding(org=org, principal=principal, membership=request.membership, facts=facts),
        "activity": overview.activity_list(org=org, runs=runs),
        "runs": overview.recent_runs(org=org, runs=runs),
        "usage": usage,
        "percent": min(100, round(100 * requests["used"] / requests["included"])) if requests["included"] else 100,
        "usage_charts": usage_charts(org=org, breakdowns=("feature",)),
        "member_count": facts.member_count,
        "can_load_samples": principal.has(DOCUMENTS_WRITE), "sees_billing": principal.has(ADMIN),
        "sample_names": [path.name for path in samples.sample_files()],
    })  # fmt: skip


@org_page(READ)
def activity_fragment(request: OrgHttpRequest) -> HttpResponse:
    """The activity list alone, for the live refresh (static/js/overview.js)."""
    response = render(request, "accounts/_activity.html", {"activity": overview.activity_list(org=request.org)})
    response["Cache-Control"] = "no-store"
    return response


@org_page(DOCUMENTS_WRITE)
@require_POST
def samples_load(request: OrgHttpRequest) -> HttpResponse:
    loaded = run_service(request, lambda: samples.samples_load(org=request.org, user=request.user))
    if loaded is True or loaded == []:
        messages.info(request, "The samples are already in the Samples collection.")
    elif loaded:
        names = ", ".join(document.title for document in loaded)
        messages.success(request, f"Loaded {names} into Samples: they are being read now.")
    return redirect("org-dashboard", org_slug=request.org.slug)


@org_page(READ)
@require_POST
def onboarding_dismiss(request: OrgHttpRequest) -> HttpResponse:
    show = request.POST.get("show") == "1"
    account_services.onboarding_dismiss(membership=request.membership, dismissed=not show)
    if not show:
        messages.info(request, "Checklist hidden. Show it again from the bottom of the Overview.")
    return redirect("org-dashboard", org_slug=request.org.slug)


@org_page(ADMIN)
def insights_page(request: OrgHttpRequest) -> HttpResponse:
    """The dashboards over a range (?range=24h|7d|30d, or ?start=&end= as YYYY-MM-DD): a bad range is a 400
    page that says what to fix."""
    params = request.GET
    context: dict = {"ranges": list(insights.RANGES), "start": params.get("start", ""), "end": params.get("end", "")}
    try:
        rng = insights.range_parse(key=params.get("range", ""), start=context["start"], end=context["end"])
    except ApplicationError as exc:
        context.update(error=exc.message, current=params.get("range", "custom") or "custom")
        return render(request, "analytics/insights.html", context, status=400)
    data = insights.insights_get(org=request.org, rng=rng)
    visible = prompt_visible(principal=request.principal)
    context.update(
        rng=rng,
        data=data,
        charts=insights_charts(data),
        current=rng.key,
        failing=[
            {**q, "last_seen": datetime.fromisoformat(q["last_seen"])}
            for q in insights.failing_questions(org=request.org, rng=rng)
        ]
        if visible
        else None,
        shown_end=rng.end - timedelta(seconds=1),
    )
    return render(request, "analytics/insights.html", context)
