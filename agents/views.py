import uuid
from typing import Any

from django.contrib import messages
from django.db.models import Count
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts.permissions import CREWS_RUN, READ
from accounts.views import OrgHttpRequest, org_page, run_service
from agents import definitions, selectors, services, starters
from agents.models import Crew, Run
from agents.tools import TOOLS
from saas.llm import provider_registry


def _model_choices(org: Any) -> list[tuple[str, str]]:
    choices = [("auto", "Auto (picks for you)")]
    for model in provider_registry.reachable_models(org):  # the team's own providers' models first
        label = f"{model.alias} · offline extractive, not generative" if model.upstream == "local" else model.alias
        choices.append((model.alias, label))
    return choices


# --- Crews -------------------------------------------------------------------------------------------------


def _builder(request: OrgHttpRequest, crew: Crew | None) -> HttpResponse:
    spec = services.crew_spec(crew) if crew else starters.for_org(BLANK_CREW)
    tools = [{"name": t.name, "description": t.description} for t in TOOLS.values()]
    return render(request, "agents/crew_builder.html", {
        "crew": crew, "spec": spec, "tools": tools, "models": _model_choices(request.org),
    })  # fmt: skip


BLANK_CREW = {
    "name": "", "description": "", "process": "sequential", "default_model": "auto",
    "agents": [{"role": "researcher", "goal": "", "tools": ["search_documents"]}],
    "tasks": [{"name": "research", "agent": "researcher", "description": ""}],
}  # fmt: skip


@org_page(READ)
def crews_index(request: OrgHttpRequest) -> HttpResponse:
    crews = list(Crew.objects.for_org(request.org).annotate(agent_count=Count("agents")).order_by("name"))
    last_runs = {}
    for run in Run.objects.for_org(request.org).filter(crew__in=crews).order_by("crew_id", "-created_at").distinct(
        "crew_id"
    ):  # fmt: skip
        last_runs[run.crew_id] = run
    rows = [{"crew": c, "last_run": last_runs.get(c.pk)} for c in crews]
    return render(request, "agents/crews.html", {
        "rows": rows, "starters": starters.STARTERS, "can_edit": request.principal.has(CREWS_RUN),
    })  # fmt: skip


@org_page(CREWS_RUN)
@require_POST
def crew_from_starter(request: OrgHttpRequest) -> HttpResponse:
    starter = request.POST.get("starter", "")
    crew = run_service(request, lambda: services.crew_from_starter(principal=request.principal, starter=starter))
    if not isinstance(crew, Crew):
        return redirect("crews-index", org_slug=request.org.slug)
    messages.success(request, f"Created {crew.name!r}. Edit it, or run it now.")
    return redirect("crew-detail", org_slug=request.org.slug, crew_id=crew.pk)


@org_page(CREWS_RUN)
def crew_new(request: OrgHttpRequest) -> HttpResponse:
    return _builder(request, None)


@org_page(CREWS_RUN)
def crew_edit(request: OrgHttpRequest, crew_id: str) -> HttpResponse:
    return _builder(request, services.crew_get(org=request.org, crew_id=crew_id))


@org_page(READ)
def crew_detail(request: OrgHttpRequest, crew_id: str) -> HttpResponse:
    crew = services.crew_get(org=request.org, crew_id=crew_id)
    spec = services.crew_spec(crew)
    runs = Run.objects.for_org(request.org).filter(crew=crew).order_by("-created_at")[:50]
    return render(request, "agents/crew_detail.html", {
        "crew": crew, "spec": spec, "inputs": definitions.inputs_needed(spec), "runs": runs,
        "can_run": request.principal.has(CREWS_RUN), "idempotency_key": uuid.uuid4(),
    })  # fmt: skip


@org_page(CREWS_RUN)
@require_POST
def crew_delete(request: OrgHttpRequest, crew_id: str) -> HttpResponse:
    crew = services.crew_get(org=request.org, crew_id=crew_id)
    if run_service(request, lambda: services.crew_delete(principal=request.principal, crew_id=crew.pk),
                   f"Deleted {crew.name!r}."):  # fmt: skip
        return redirect("crews-index", org_slug=request.org.slug)
    return redirect("crew-detail", org_slug=request.org.slug, crew_id=crew.pk)


@org_page(READ)
def run_detail(request: OrgHttpRequest, run_id: str) -> HttpResponse:
    run = services.run_get(org=request.org, run_id=run_id)
    return render(request, "agents/run.html", {
        "run": run, "body": selectors.run_json(run, with_steps=True), "can_cancel": request.principal.has(CREWS_RUN),
    })  # fmt: skip
