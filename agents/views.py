import json
import uuid
from decimal import Decimal
from typing import Any

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts.permissions import ADMIN, CREWS_RUN, READ
from accounts.views import OrgHttpRequest, org_page, run_service
from agents import crew_runs, definitions, selectors, services, starters
from agents.models import Crew, Run
from agents.tools import TOOLS
from saas.core.paging import table_page
from saas.llm import provider_registry
from saas.llm import selectors as llm_selectors

CREWS_PER_PAGE = 20
RUNS_PER_PAGE = 20


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
    query = request.GET.get("q", "")[:200]
    table = table_page(request, selectors.crew_list(org=request.org, query=query), per_page=CREWS_PER_PAGE)
    crews = list(table.rows)
    last_runs = selectors.crew_last_runs(org=request.org, crews=crews)
    inputs = selectors.crew_inputs(org=request.org, crews=crews)
    rows = [{"crew": c, "last_run": last_runs.get(c.pk), "inputs": inputs.get(c.pk, [])} for c in crews]
    return render(request, "agents/crews.html", {
        "rows": rows, "table": table, "query": query, "starters": starters.STARTERS,
        "can_edit": request.principal.has(CREWS_RUN), "idempotency_key": uuid.uuid4(),
    })  # fmt: skip


@org_page(CREWS_RUN)
@require_POST
def crew_run(request: OrgHttpRequest, crew_id: str) -> HttpResponse:
    """Start a run from a page's form (the crew list's Run button): its fields are the crew's inputs."""
    crew = services.crew_get(org=request.org, crew_id=crew_id)
    needed = definitions.inputs_needed(services.crew_spec(crew))
    inputs = {name: request.POST.get(f"input-{name}", "") for name in needed}
    key = request.POST.get("idempotency_key", "")[:255]
    started = run_service(request, lambda: crew_runs.run_start(crew=crew, inputs=inputs, user=request.user,
                                                              idempotency_key=key))  # fmt: skip
    if not started:  # the reason is a message on the list, where the form was
        return redirect("crews-index", org_slug=request.org.slug)
    run, _ = started
    return redirect("run-detail", org_slug=request.org.slug, run_id=run.pk)


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
    status = request.GET.get("status", "")
    runs = table_page(request, selectors.run_list(org=request.org, crew=crew, status=status), per_page=RUNS_PER_PAGE)
    return render(request, "agents/crew_detail.html", {
        "crew": crew, "spec": spec, "inputs": definitions.inputs_needed(spec), "runs": runs, "status": status,
        "statuses": Run.Status.choices, "can_run": request.principal.has(CREWS_RUN), "idempotency_key": uuid.uuid4(),
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
    run = crew_runs.run_get(org=request.org, run_id=run_id)
    body = selectors.run_json(run, with_steps=True)
    previous = selectors.run_list(org=request.org, crew=run.crew).filter(created_at__lt=run.created_at).first()
    return render(request, "agents/run.html", {
        "run": run, "body": body, "output": _output_markdown(body), "steps": [_step_row(s) for s in body["steps"]],
        "by_agent": body["breakdown"]["agents"],
        "breakdowns": [("Agent", _bars(body["breakdown"]["agents"]), "by-agent"),
                       ("Task", _bars(body["breakdown"]["tasks"]), "by-task")],
        "can_cancel": request.principal.has(CREWS_RUN), "can_retry": request.principal.has(CREWS_RUN),
        "finished": run.status in Run.FINISHED, "previous": previous, "idempotency_key": uuid.uuid4(),
        "traced": request.principal.has(ADMIN)
        and bool(llm_selectors.traces_recorded(org=request.org, ids=[str(run.pk)])),
    })  # fmt: skip


@org_page(CREWS_RUN)
@require_POST
def run_retry(request: OrgHttpRequest, run_id: str) -> HttpResponse:
    run = crew_runs.run_get(org=request.org, run_id=run_id)  # another org's run: a 404 before anything
    key = request.POST.get("idempotency_key", "")[:255]
    retried = run_service(request, lambda: crew_runs.run_retry(org=request.org, run_id=run.pk, user=request.user,
                                                              idempotency_key=key))  # fmt: skip
    if not isinstance(retried, Run):
        return redirect("run-detail", org_slug=request.org.slug, run_id=run.pk)
    return redirect("run-detail", org_slug=request.org.slug, run_id=retried.pk)


@org_page(READ)
def runs_compare(request: OrgHttpRequest) -> HttpResponse:
    """Two runs side by side: their outputs, each task's output, inputs, engines, time and cost. Either run
    in another org (or not a run) is a 404."""
    ids = request.GET.getlist("run")
    if len(ids) != 2 or len(set(ids)) != 2:
        return render(request, "agents/run_compare.html", {"problem": "Choose two different runs to compare."},
                      status=400)  # fmt: skip
    runs = [crew_runs.run_get(org=request.org, run_id=_uuid_or_404(value)) for value in ids]
    runs.sort(key=lambda r: r.created_at)
    sides: list[dict[str, Any]] = []
    for run in runs:
        body = selectors.run_json(run, with_steps=True)
        sides.append({"run": run, "body": body, "output": _output_markdown(body),
                      "tasks": selectors.run_task_outputs(run)})  # fmt: skip
    names: list[str] = []
    for side in sides:
        for task in side["run"].definition.get("tasks") or []:
            if task["name"] not in names:
                names.append(task["name"])
    tasks = [{"name": name, "outputs": [side["tasks"].get(name) for side in sides]} for name in names]
    return render(request, "agents/run_compare.html", {"sides": sides, "tasks": tasks, "crew": runs[0].crew})


def _uuid_or_404(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise Http404("No such run.") from None


def _output_markdown(body: dict[str, Any]) -> str:
    """A JSON output shown as highlighted JSON; text as the Markdown it is."""
    if body.get("output_json") is not None:
        return "```json\n" + json.dumps(body["output_json"], indent=2, ensure_ascii=False) + "\n```"
    return body.get("output") or ""


STEP_KINDS = {"plan": "plan", "message": "model", "tool_call": "tool call", "tool_result": "tool result",
              "output": "output"}  # fmt: skip


def _step_row(step: dict[str, Any]) -> dict[str, Any]:
    """A step as the run page lists it (static/js/crews.js writes live ones the same way)."""
    data = step.get("data") or {}
    text = step["content"]
    if not text and data.get("tool_calls"):
        text = "→ calls " + ", ".join(data["tool_calls"])
    if data.get("cancelled"):
        text = (text + "\n" if text else "") + "(stopped: cancelled)"
    return {
        **step, "text": text, "kind_label": STEP_KINDS.get(step["kind"], step["kind"]),
        "failed": bool(data.get("error")) or data.get("ok") is False,
        "tokens": step["prompt_tokens"] + step["completion_tokens"], "costs": Decimal(step["cost_usd"]) > 0,
    }  # fmt: skip


def _bars(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The breakdown's rows with each one's share of the largest time and cost, for the bar charts (0-100)."""
    longest = max((row["duration_ms"] or 0 for row in rows), default=0)
    dearest = max((Decimal(row["cost_usd"]) for row in rows), default=Decimal(0))
    return [
        {**row, "tokens": (row["prompt_tokens"] or 0) + (row["completion_tokens"] or 0),
         "time_share": round(100 * (row["duration_ms"] or 0) / longest, 1) if longest else 0,
         "cost_share": round(float(100 * Decimal(row["cost_usd"]) / dearest), 1) if dearest else 0}
        for row in rows
    ]  # fmt: skip
