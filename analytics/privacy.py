"""Analytics' share of exports and erasure (saas/core/privacy.py).

Evals: a case made from a member's question (their thumbs-down, or their request in the log) holds their words:
it is exported with their data and erased with them; the team's datasets, cases, runs and results go with the
team. Dashboards: the rollups hold counts, sums and histograms per org, hour (or day), feature and model: nobody's
words and no person (a member's erasure leaves them as they are). Erasing the org deletes them."""

from typing import Any

from django.db import transaction
from django.db.models import Q

from analytics.models import DailyRollup, EvalCase, EvalDataset, EvalResult, EvalRun, HourlyRollup, RollupState
from saas.core.privacy import ExportSink, Store, Subject


def _case_json(case: EvalCase) -> dict[str, Any]:
    return {
        "id": str(case.pk), "dataset": case.dataset.name, "input": case.input, "expected_answer": case.expected_answer,
        "match": case.match, "rubric": case.rubric, "note": case.note, "source": case.source,
        "created_at": case.created_at.isoformat(),
    }  # fmt: skip


def _theirs(org_id: Any, user_id: Any) -> Any:
    return EvalCase.objects.for_org(org_id).filter(Q(feedback__user_id=user_id) | Q(llm_call__user_id=user_id))


def export_user(*, sink: ExportSink, user_id: Any, org_id: Any, folder: str) -> None:
    cases = _theirs(org_id, user_id).select_related("dataset").order_by("created_at")
    sink.json(f"{folder}/eval_cases.json", [_case_json(c) for c in cases])


def export_org(*, sink: ExportSink, org_id: Any, folder: str) -> None:
    datasets = EvalDataset.objects.for_org(org_id).order_by("name")
    sink.json(f"{folder}/eval_datasets.json", [{
        "id": str(d.pk), "name": d.name, "description": d.description, "prompt_key": d.prompt_key,
        "max_drop": d.max_drop, "judge_model": d.judge_model,
        "cases": [_case_json(c) for c in EvalCase.objects.for_org(org_id).filter(dataset=d).select_related("dataset")],
    } for d in datasets])  # fmt: skip


def _delete(model: Any, rows: Any, batch_size: int) -> int:
    with transaction.atomic():
        ids = list(rows.values_list("pk", flat=True)[:batch_size])
        return model.all_orgs.filter(pk__in=ids).delete()[0] if ids else 0


def erase_user(*, subject: Subject, batch_size: int) -> int:
    """Runs before agents' and the ledger's eraser (higher layers first): their feedback and calls still say
    whose the questions were. Results of those cases go with them."""
    cases = _theirs(subject.org_id, subject.user_id)
    results = EvalResult.objects.for_org(subject.org_id).filter(case__in=cases.values("pk"))
    return _delete(EvalResult, results, batch_size) or _delete(EvalCase, cases, batch_size)


def erase_org(*, org_id: Any, batch_size: int) -> int:
    return (
        _delete(EvalResult, EvalResult.objects.for_org(org_id), batch_size)
        or _delete(EvalRun, EvalRun.objects.for_org(org_id), batch_size)
        or _delete(EvalCase, EvalCase.objects.for_org(org_id), batch_size)
        or _delete(EvalDataset, EvalDataset.objects.for_org(org_id), batch_size)
    )


STORE = Store(
    name="evals",
    title="Eval datasets",
    what="Questions made into evaluation cases (from thumbs-down, the request log or an import), with their "
    "comments, expected answers, and each run's answers and scores",
    where="PostgreSQL (questions, answers, comments and citations encrypted at rest)",
    kept="Until deleted; a member's questions are erased with their account",
    export_user=export_user,
    export_org=export_org,
    erase_user=erase_user,
    erase_org=erase_org,
)


def rollups_erase_org(*, org_id: Any, batch_size: int) -> int:
    """A batch of day rows, then of hour rows, then the mark."""
    with transaction.atomic():
        for model in (DailyRollup, HourlyRollup):
            batch = list(model.objects.for_org(org_id).values_list("pk", flat=True)[:batch_size])
            erased = model.objects.for_org(org_id).filter(pk__in=batch).delete()[0]
            if erased:
                return erased
        return RollupState.objects.for_org(org_id).delete()[0]


ROLLUPS = Store(
    name="insights",
    title="Dashboard figures",
    what="Per hour (and per day), feature and model: how many AI requests, errors, tokens, cost, latency, cache "
    "hits, feedback and groundedness (numbers only: no prompts, answers or people)",
    where="PostgreSQL",
    kept="As long as the team exists",
    erase_org=rollups_erase_org,
)
