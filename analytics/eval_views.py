"""The evals pages (`/o/<org>/evals/`): datasets and the team's recent thumbs-down (one click makes a case), a
dataset's cases with the import and the run form, a run's results case by case, and two runs compared.
Admins only: datasets hold the team's questions and the comments on the answers."""

import json
from typing import Any

from django.contrib import messages
from django.db.models import Count
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts.permissions import ADMIN
from accounts.views import OrgHttpRequest, org_page, run_service
from agents.models import Feedback
from analytics import eval_runs, evals, scorers
from analytics.models import EvalCase, EvalDataset, EvalRun
from documents.models import Collection, Document
from saas.core.errors import ApplicationError
from saas.llm import prompts
from saas.llm import selectors as llm_selectors

INBOX = 20  # thumbs-down shown on the evals page


def _dataset_url(request: OrgHttpRequest, dataset_id: Any) -> str:
    return reverse("eval-dataset", kwargs={"org_slug": request.org.slug, "dataset_id": dataset_id})


def _latest_runs(org: Any, datasets: list[EvalDataset]) -> dict[Any, EvalRun]:
    latest: dict[Any, EvalRun] = {}
    runs = EvalRun.objects.for_org(org).filter(dataset__in=datasets).order_by("dataset_id", "-created_at")
    for run in runs.distinct("dataset_id"):
        latest[run.dataset_id] = run
    return latest


def _score_rows(scores: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(scorers.LABELS[n], scores[n]) for n in scorers.SCORERS if n in scores]


@org_page(ADMIN)
def evals_index(request: OrgHttpRequest) -> HttpResponse:
    org = request.org
    datasets = list(EvalDataset.objects.for_org(org).order_by("name"))
    counted = EvalCase.objects.for_org(org).values("dataset_id").order_by().annotate(n=Count("id"))
    counts = {row["dataset_id"]: row["n"] for row in counted}
    latest = _latest_runs(org, datasets)
    down = list(Feedback.objects.for_org(org).filter(rating=Feedback.Rating.DOWN)
                .select_related("user", "message__llm_call", "llm_call").order_by("-updated_at")[:INBOX])  # fmt: skip
    made = set(EvalCase.objects.for_org(org).filter(feedback__in=down).values_list("feedback_id", flat=True))
    visible = llm_selectors.prompt_visible(principal=request.principal)
    inbox = [{
        "feedback": f, "case_made": f.pk in made,
        "question": evals.question_of(f.llm_call or (f.message.llm_call if f.message else None)) if visible else "",
    } for f in down]  # fmt: skip
    return render(request, "analytics/evals_index.html", {
        "datasets": [{"dataset": d, "cases": counts.get(d.pk, 0), "run": latest.get(d.pk),
                      "scores": _score_rows(latest[d.pk].scores) if d.pk in latest else []} for d in datasets],
        "inbox": inbox, "visible": visible, "tab": "evals",
    })  # fmt: skip


@org_page(ADMIN)
@require_POST
def dataset_new(request: OrgHttpRequest) -> HttpResponse:
    dataset = run_service(request, lambda: evals.dataset_create(
        org=request.org, user=request.user, name=request.POST.get("name", ""),
        description=request.POST.get("description", ""), max_drop=request.POST.get("max_drop") or 0.05,
    ), "Dataset created.")  # fmt: skip
    if isinstance(dataset, EvalDataset):
        return redirect(_dataset_url(request, dataset.pk))
    return redirect("evals", org_slug=request.org.slug)


def _versions(org: Any, key: str) -> list[Any]:
    production = prompts.prompt_resolve(org=org, key=key)
    return [{"version": v, "production": v.pk == production.version_id, "team": v.organization_id is not None}
            for v in prompts.prompt_versions(org=org, key=key)]  # fmt: skip


@org_page(ADMIN)
def dataset_page(request: OrgHttpRequest, dataset_id: Any) -> HttpResponse:
    org = request.org
    dataset = evals.dataset_get(org=org, dataset_id=dataset_id)
    cases = list(
        EvalCase.objects.for_org(org).filter(dataset=dataset).select_related("collection", "expected_document")
    )
    runs = list(EvalRun.objects.for_org(org).filter(dataset=dataset).order_by("-created_at")[:20])
    return render(request, "analytics/eval_dataset.html", {
        "dataset": dataset, "cases": cases, "runs": [{"run": r, "scores": _score_rows(r.scores)} for r in runs],
        "versions": _versions(org, dataset.prompt_key), "matches": EvalCase.Match.choices,
        "collections": Collection.objects.for_org(org).order_by("name"),
        "documents": Document.objects.for_org(org).filter(status=Document.Status.READY).order_by("title")[:200],
        "max_cases": evals.MAX_CASES, "import_mb": evals.IMPORT_MAX_BYTES // (1024 * 1024),
        "fields": evals.IMPORT_FIELDS, "tab": "evals",
        "import_errors": request.session.pop("eval_import_errors", None),
    })  # fmt: skip


@org_page(ADMIN)
@require_POST
def dataset_settings(request: OrgHttpRequest, dataset_id: Any) -> HttpResponse:
    post = request.POST
    run_service(request, lambda: evals.dataset_update(
        org=request.org, dataset_id=dataset_id, name=post.get("name"), description=post.get("description"),
        max_drop=post.get("max_drop"), judge_model=post.get("judge_model"),
    ), "Saved.")  # fmt: skip
    return redirect(_dataset_url(request, dataset_id))


@org_page(ADMIN)
@require_POST
def dataset_delete(request: OrgHttpRequest, dataset_id: Any) -> HttpResponse:
    evals.dataset_get(org=request.org, dataset_id=dataset_id)
    run_service(request, lambda: evals.dataset_delete(org=request.org, dataset_id=dataset_id), "Dataset deleted.")
    return redirect("evals", org_slug=request.org.slug)


def _case_data(post: Any) -> dict[str, Any]:
    return {name: post.get(name, "") for name in evals.IMPORT_FIELDS if name in post}


@org_page(ADMIN)
@require_POST
def case_new(request: OrgHttpRequest, dataset_id: Any) -> HttpResponse:
    evals.dataset_get(org=request.org, dataset_id=dataset_id)
    run_service(request, lambda: evals.case_create(org=request.org, user=request.user, dataset_id=dataset_id,
                                                   data=_case_data(request.POST)), "Case added.")  # fmt: skip
    return redirect(_dataset_url(request, dataset_id) + "#cases")


@org_page(ADMIN)
def case_edit(request: OrgHttpRequest, dataset_id: Any, case_id: Any) -> HttpResponse:
    org = request.org
    case = evals.case_get(org=org, case_id=case_id, dataset_id=dataset_id)
    if request.method == "POST":
        saved = run_service(
            request,
            lambda: evals.case_update(org=org, case_id=case.pk, dataset_id=dataset_id, data=_case_data(request.POST)),
            "Case saved.",
        )
        if saved:
            return redirect(_dataset_url(request, dataset_id) + f"#case-{case.pk}")
    return render(request, "analytics/eval_case.html", {
        "case": case, "dataset": case.dataset, "matches": EvalCase.Match.choices,
        "collections": Collection.objects.for_org(org).order_by("name"),
        "documents": Document.objects.for_org(org).filter(status=Document.Status.READY).order_by("title")[:200],
        "schema_text": "" if case.json_schema is None else json.dumps(case.json_schema, indent=2),
        "tab": "evals",
    })  # fmt: skip


@org_page(ADMIN)
@require_POST
def case_delete(request: OrgHttpRequest, dataset_id: Any, case_id: Any) -> HttpResponse:
    evals.case_get(org=request.org, case_id=case_id, dataset_id=dataset_id)
    run_service(request, lambda: evals.case_delete(org=request.org, case_id=case_id, dataset_id=dataset_id),
                "Case deleted.")  # fmt: skip
    return redirect(_dataset_url(request, dataset_id) + "#cases")


@org_page(ADMIN)
@require_POST
def cases_import(request: OrgHttpRequest, dataset_id: Any) -> HttpResponse:
    evals.dataset_get(org=request.org, dataset_id=dataset_id)
    upload = request.FILES.get("file")
    if upload is None:
        messages.error(request, "Choose a CSV or JSONL file to import.")
        return redirect(_dataset_url(request, dataset_id) + "#import")
    if upload.size and upload.size > evals.IMPORT_MAX_BYTES:
        messages.error(request, f"The file is larger than {evals.IMPORT_MAX_BYTES // (1024 * 1024)} MB.")
        return redirect(_dataset_url(request, dataset_id) + "#import")
    try:
        cases = evals.cases_import(
            org=request.org,
            user=request.user,
            dataset_id=dataset_id,
            data=upload.read(evals.IMPORT_MAX_BYTES + 1),
            filename=upload.name or "",
        )
    except ApplicationError as exc:
        messages.error(
            request,
            exc.message
            if "lines" not in exc.details
            else f"Nothing was imported: {exc.details.get('wrong', len(exc.details['lines']))} wrong line(s).",
        )
        request.session["eval_import_errors"] = exc.details.get("lines", [])
        return redirect(_dataset_url(request, dataset_id) + "#import")
    messages.success(request, f"Imported {len(cases)} case{'s' if len(cases) != 1 else ''}.")
    return redirect(_dataset_url(request, dataset_id) + "#cases")


@org_page(ADMIN)
@require_POST
def run_start(request: OrgHttpRequest, dataset_id: Any) -> HttpResponse:
    evals.dataset_get(org=request.org, dataset_id=dataset_id)
    run = run_service(request, lambda: eval_runs.eval_run_start(
        org=request.org, user=request.user, dataset_id=dataset_id, version_id=request.POST.get("version") or None,
        text=request.POST.get("text") or None,
    ))  # fmt: skip
    if isinstance(run, EvalRun):
        messages.success(request, "The run is queued: this page shows each case as it is scored.")
        return redirect("eval-run", org_slug=request.org.slug, run_id=run.pk)
    return redirect(_dataset_url(request, dataset_id) + "#run")


@org_page(ADMIN)
def run_page(request: OrgHttpRequest, run_id: Any) -> HttpResponse:
    org = request.org
    run = eval_runs.eval_run_get(org=org, run_id=run_id)
    results = eval_runs.eval_run_results(org=org, run=run)
    others = EvalRun.objects.for_org(org).filter(dataset=run.dataset, status=EvalRun.Status.SUCCEEDED).exclude(
        pk=run.pk).order_by("-created_at")[:20]  # fmt: skip
    rows = [{"result": r, "scores": [(scorers.LABELS[n], r.scores[n], r.reasons.get(n, "")) for n in scorers.SCORERS
                                     if n in r.scores]} for r in results]  # fmt: skip
    return render(request, "analytics/eval_run.html", {
        "run": run, "dataset": run.dataset, "rows": rows, "scores": _score_rows(run.scores), "others": others,
        "done": len(results), "live": run.status in (EvalRun.Status.QUEUED, EvalRun.Status.RUNNING), "tab": "evals",
    })  # fmt: skip


@org_page(ADMIN)
def run_diff(request: OrgHttpRequest, run_id: Any) -> HttpResponse:
    org = request.org
    run = eval_runs.eval_run_get(org=org, run_id=run_id)
    against = request.GET.get("against", "")
    if not llm_selectors.is_uuid(against):
        messages.error(request, "Choose a run to compare with.")
        return redirect("eval-run", org_slug=org.slug, run_id=run.pk)
    base = eval_runs.eval_run_get(org=org, run_id=against)
    try:
        diff = eval_runs.eval_run_diff(org=org, base=base, other=run)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("eval-run", org_slug=org.slug, run_id=run.pk)
    return render(request, "analytics/eval_diff.html", {
        "diff": diff, "run": run, "base": base, "dataset": run.dataset,
        "cases": [{"case": c.case, "verdict": c.verdict,
                   "changes": [(scorers.LABELS.get(n, n), b, a) for n, (b, a) in c.changes.items()]}
                  for c in diff.cases],
        "scores": [(scorers.LABELS[n], b, a) for n, (b, a) in diff.scores.items()], "tab": "evals",
    })  # fmt: skip


@org_page(ADMIN)
@require_POST
def case_from_feedback(request: OrgHttpRequest, feedback_id: Any) -> HttpResponse:
    made = run_service(
        request,
        lambda: evals.case_from_feedback(
            principal=request.principal, feedback_id=feedback_id, dataset_id=request.POST.get("dataset") or None
        ),
    )
    return _made(request, made)


@org_page(ADMIN)
@require_POST
def case_from_call(request: OrgHttpRequest, call_id: Any) -> HttpResponse:
    made = run_service(request, lambda: evals.case_from_call(
        principal=request.principal, call_id=call_id, dataset_id=request.POST.get("dataset") or None))  # fmt: skip
    return _made(request, made)


def _made(request: OrgHttpRequest, made: Any) -> HttpResponse:
    if not isinstance(made, tuple):
        back = request.POST.get("back", "")
        return redirect(back if back.startswith("/o/") else reverse("evals", kwargs={"org_slug": request.org.slug}))
    case, created = made
    if created:
        messages.success(request, f"Case added to {case.dataset.name}: give it an expected answer or document.")
    else:
        messages.info(request, f"This answer is already a case in {case.dataset.name}.")
    return redirect(reverse("eval-case-edit", kwargs={"org_slug": request.org.slug, "dataset_id": case.dataset_id,
                                                       "case_id": case.pk}))  # fmt: skip
