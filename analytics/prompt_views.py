"""The Prompts and Experiments pages (`/o/<org>/prompts/`, `/o/<org>/experiments/`): every member may read them;
only admins add versions, set labels, and start or end experiments. Plain forms; confirmations through the
shared data-confirm mechanism."""

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts.authentication import request_origin
from accounts.permissions import ADMIN, READ
from accounts.views import OrgHttpRequest, org_page, run_service
from analytics import experiments, gate
from analytics.prompt_api import _labels
from analytics.prompt_diff import draft_diff, previous_of, version_diff
from saas.core.errors import ApplicationError
from saas.llm import config, prompt_experiments, prompts
from saas.llm.models import PromptVersion


def _prompt_context(request: OrgHttpRequest, key: str) -> dict[str, Any]:
    org = request.org
    default, override = prompts.prompt_get(org=org, key=key)
    resolved = prompts.prompt_resolve(org=org, key=key)
    labels = _labels(default, override)
    versions = prompts.prompt_versions(org=org, key=key)
    running = [e for e in experiments.experiment_list(org=org) if e.key == key and e.status == "running"]
    return {
        "key": key, "head": default or override, "default": default, "override": override, "resolved": resolved,
        "versions": [(v, labels.get(v.pk, [])) for v in versions], "running": running[0] if running else None,
        "can_edit": request.principal.has(ADMIN),
    }  # fmt: skip


@org_page(READ)
def prompt_index(request: OrgHttpRequest) -> HttpResponse:
    rows = []
    for row in prompts.prompt_list(org=request.org):
        rows.append({**row, "resolved": prompts.prompt_resolve(org=request.org, key=row["key"])})
    return render(request, "analytics/prompts.html", {"rows": rows, "tab": "prompts"})


@org_page(READ)
def prompt_detail(request: OrgHttpRequest, key: str) -> HttpResponse:
    return render(request, "analytics/prompt_detail.html", {**_prompt_context(request, key), "tab": "prompts"})


@org_page(ADMIN)
@require_http_methods(["GET", "POST"])
def prompt_edit(request: OrgHttpRequest, key: str) -> HttpResponse:
    """The editor: a new version of the key (the org's override), previewed as a diff against the version it
    follows before it is saved."""
    org = request.org
    context = _prompt_context(request, key)
    own = [v for v, _ in context["versions"] if v.organization_id is not None]
    base = own[0] if own else (context["default"].production if context["default"] else None)
    form = {"text": base.text if base else "", "model": base.model if base else "", "note": "",
            "temperature": (base.parameters or {}).get("temperature", "") if base else "",
            "max_tokens": (base.parameters or {}).get("max_tokens", "") if base else ""}  # fmt: skip
    diff = None
    if request.method == "POST":
        form = {name: request.POST.get(name, "").replace("\r\n", "\n") for name in form}
        parameters = {name: form[name] for name in ("temperature", "max_tokens") if form[name].strip()}
        if request.POST.get("action") == "save":
            version = run_service(request, lambda: prompts.prompt_version_create(
                org=org, key=key, text=form["text"], model=form["model"].strip(), parameters=parameters,
                note=form["note"], principal=request.principal, origin=request_origin(request),
            ), "Saved as a new version. Label it staging or production to use it.")  # fmt: skip
            if isinstance(version, PromptVersion):
                return redirect("prompt-version", org_slug=org.slug, key=key, version_id=version.pk)
        diff = draft_diff(previous=base, text=form["text"])
    return render(request, "analytics/prompt_edit.html", {
        **context, "form": form, "base": base, "diff": diff, "tab": "prompts",
        "models": [m.alias for m in config.current().chat_models()],
    })  # fmt: skip


@org_page(READ)
def prompt_version(request: OrgHttpRequest, key: str, version_id: str) -> HttpResponse:
    version = prompts.prompt_version_get(org=request.org, version_id=version_id)
    if version.prompt.key != key:
        raise Http404("No such version.")
    context = _prompt_context(request, key)
    labels = dict((v.pk, lab) for v, lab in context["versions"]).get(version.pk, [])
    return render(request, "analytics/prompt_version.html", {
        **context, "version": version, "labels": labels, "tab": "prompts",
        "diff": version_diff(org=request.org, version=version, previous=previous_of(org=request.org, version=version)),
    })  # fmt: skip


@org_page(ADMIN)
@require_POST
def prompt_label(request: OrgHttpRequest, version_id: str) -> HttpResponse:
    version = prompts.prompt_version_get(org=request.org, version_id=version_id)
    label = request.POST.get("label", "")

    def promote() -> Any:
        try:
            return prompts.prompt_label_set(org=request.org, version=version, label=label,
                                            principal=request.principal, origin=request_origin(request))  # fmt: skip
        except prompts.PromotionRefused as refused:  # the regression gate: why, and links to the failing cases
            messages.error(request, gate.refusal_html(refused))
            return False

    if run_service(request, promote):
        messages.success(request, f"Version {version.number} is now {label}.")
    return redirect("prompt-version", org_slug=request.org.slug, key=version.prompt.key, version_id=version.pk)


@org_page(ADMIN)
@require_POST
def prompt_reset(request: OrgHttpRequest, key: str) -> HttpResponse:
    """Back to the operator's default: the org's production label is removed (its versions are kept)."""
    prompts.prompt_get(org=request.org, key=key)
    run_service(request, lambda: prompts.prompt_label_clear(
        org=request.org, key=key, principal=request.principal, origin=request_origin(request)
    ), "The default prompt applies again.")  # fmt: skip
    return redirect("prompt-detail", org_slug=request.org.slug, key=key)


# --- Experiments -------------------------------------------------------------------------------------------


@org_page(READ)
def experiment_index(request: OrgHttpRequest) -> HttpResponse:
    return render(request, "analytics/experiments.html", {
        "experiments": experiments.experiment_list(org=request.org), "tab": "experiments",
        "can_edit": request.principal.has(ADMIN),
    })  # fmt: skip


@org_page(ADMIN)
@require_http_methods(["GET", "POST"])
def experiment_new(request: OrgHttpRequest) -> HttpResponse:
    org = request.org
    keys = [row["key"] for row in prompts.prompt_list(org=org)]
    key = request.POST.get("key") or request.GET.get("key") or (keys[0] if keys else "")
    if key not in keys:
        key = keys[0] if keys else ""
    versions = prompts.prompt_versions(org=org, key=key) if key else []
    form: dict[str, Any] = {"name": request.POST.get("name", ""), "versions": request.POST.getlist("version"),
                            "min_samples": request.POST.get("min_samples", "100")}  # fmt: skip
    if request.method == "POST" and request.POST.get("action") == "start":

        def start() -> Any:
            chosen = [prompts.prompt_version_get(org=org, version_id=v) for v in form["versions"]]
            try:
                minimum = int(form["min_samples"])
            except ValueError:
                raise ApplicationError("The minimum sample is a whole number.", code="invalid") from None
            return prompt_experiments.experiment_start(org=org, key=key, name=form["name"], versions=chosen,
                                            min_samples=minimum, principal=request.principal,
                                            origin=request_origin(request))  # fmt: skip

        experiment = run_service(request, start, "Experiment started: members are split between the versions now.")
        if experiment and experiment is not True:
            return redirect("experiment-detail", org_slug=org.slug, experiment_id=experiment.pk)
    return render(request, "analytics/experiment_new.html", {
        "keys": keys, "key": key, "versions": versions, "form": form, "tab": "experiments",
    })  # fmt: skip


@org_page(READ)
def experiment_detail(request: OrgHttpRequest, experiment_id: str) -> HttpResponse:
    experiment = experiments.experiment_get(org=request.org, experiment_id=experiment_id)
    report = experiments.experiment_report(experiment=experiment)
    return render(request, "analytics/experiment_detail.html", {
        "experiment": experiment, "report": report, "control": report.variants[0] if report.variants else None,
        "can_edit": request.principal.has(ADMIN), "tab": "experiments",
    })  # fmt: skip


@org_page(ADMIN)
@require_POST
def experiment_end(request: OrgHttpRequest, experiment_id: str) -> HttpResponse:
    experiment = experiments.experiment_get(org=request.org, experiment_id=experiment_id)
    winner_id = request.POST.get("winner", "")
    winner = experiment.variants.filter(pk=winner_id).select_related("version__prompt").first() if winner_id else None
    if winner_id and winner is None:
        messages.error(request, "Choose one of this experiment's variants.")
    else:
        done = "Experiment ended." + (f" Variant {winner.name} is in production now." if winner else "")
        run_service(request, lambda: prompt_experiments.experiment_end(
            experiment=experiment, winner=winner, principal=request.principal, origin=request_origin(request)
        ), done)  # fmt: skip
    return redirect("experiment-detail", org_slug=request.org.slug, experiment_id=experiment.pk)
