"""Eval runs: a prompt's text answers every case of a dataset through the real ask path (retrieval, the
gateway, citations, groundedness; documents.services.ask), never from the caches, and each answer is scored
(analytics/scorers.py). Queued for Celery (`analytics.eval_run`), or run inline by the gate.

Idempotent: a run that finished is left alone; a run picked up again (a redelivered task after a lost worker)
goes on from the first case without a result, and a case is never scored twice in one run (unique run/case).
"""

import logging
import time
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from analytics import scorers
from analytics.models import EvalCase, EvalDataset, EvalResult, EvalRun
from documents import services as documents
from documents.models import Chunk
from saas.core.errors import ApplicationError, NotFound
from saas.llm import gateway, prompts
from saas.llm.prompt_models import PromptVersion
from saas.llm.prompts import ResolvedPrompt
from saas.llm.providers import ChatRequest, LLMError, PaymentOverdue, QuotaExceeded

logger = logging.getLogger(__name__)
MAX_PROMPT = prompts.MAX_TEXT_CHARS
# Errors that would fail every remaining case the same way: the run stops with the reason.
RUN_STOPPERS = (QuotaExceeded, PaymentOverdue)


def eval_run_get(*, org: Any, run_id: Any) -> EvalRun:
    run = EvalRun.objects.for_org(org).select_related("dataset", "created_by").filter(pk=run_id).first()
    if run is None:
        raise NotFound("No such eval run.")
    return run


def run_prompt(*, org: Any, key: str, version: PromptVersion | None = None, text: str | None = None) -> ResolvedPrompt:
    """What a run answers with: a saved version (any of the org's or the operator default's, labelled or not), a
    text tried without saving it, or else what production uses now."""
    if version is not None:
        return ResolvedPrompt(
            key=version.prompt.key, text=version.text, version_id=version.pk, number=version.number,
            model=version.model, parameters=dict(version.parameters or {}), source="eval",
        )  # fmt: skip
    if text is not None and text.strip():
        if len(text) > MAX_PROMPT:
            raise ApplicationError(f"A prompt is at most {MAX_PROMPT} characters.", code="invalid")
        return ResolvedPrompt(key=key, text=text.strip(), source="eval")
    return prompts.prompt_resolve(org=org, key=key)


def eval_run_create(
    *, org: Any, user: Any, dataset: EvalDataset, prompt: ResolvedPrompt, model: str = "default",
    purpose: str = EvalRun.Purpose.MANUAL,
) -> EvalRun:  # fmt: skip
    """A queued run of `prompt` (see run_prompt) over the dataset's cases."""
    count = EvalCase.objects.for_org(org).filter(dataset=dataset).count()
    if count == 0:
        raise ApplicationError("The dataset has no cases to run.", code="empty_dataset")
    return EvalRun.objects.for_org(org).create(
        organization=org, dataset=dataset, prompt_key=prompt.key, version_id=prompt.version_id,
        prompt_version=prompt.number or None, system_prompt=prompt.text, model=(model or "default")[:64],
        purpose=purpose, case_count=count, created_by=user,
    )  # fmt: skip


@transaction.atomic
def eval_run_start(
    *, org: Any, user: Any, dataset_id: Any, version_id: Any = None, text: str | None = None, model: str = "default",
) -> EvalRun:  # fmt: skip
    """Queues a run for the worker (analytics.eval_run) once this transaction commits: of the version given
    (by id), or of a text, or of what production uses now."""
    from analytics import tasks
    from analytics.evals import dataset_get

    dataset = dataset_get(org=org, dataset_id=dataset_id)
    version = prompts.prompt_version_get(org=org, version_id=version_id) if version_id else None
    if version is not None and version.prompt.key != dataset.prompt_key:
        raise ApplicationError(f"The dataset gates {dataset.prompt_key}; this version is of {version.prompt.key}.",
                               code="wrong_prompt")  # fmt: skip
    prompt = run_prompt(org=org, key=dataset.prompt_key, version=version, text=text)
    run = eval_run_create(org=org, user=user, dataset=dataset, prompt=prompt, model=model)
    transaction.on_commit(lambda: tasks.eval_run.delay(str(org.pk), str(run.pk)))
    return run


def _run_prompt(run: EvalRun) -> ResolvedPrompt:
    """The prompt a run was created with, again (a version is immutable; a tried text is kept on the run)."""
    version = PromptVersion.objects.for_org(run.organization_id).select_related("prompt").filter(
        pk=run.version_id).first() if run.version_id else None  # fmt: skip
    if version is not None:
        return run_prompt(org=run.organization_id, key=run.prompt_key, version=version)
    return ResolvedPrompt(key=run.prompt_key, text=run.system_prompt, number=run.prompt_version or 0, source="eval")


def _claim(org_id: Any, run_id: Any) -> EvalRun | None:
    """The run, marked running, or None when there is nothing to do (gone, or already finished)."""
    with transaction.atomic():
        run = EvalRun.objects.for_org(org_id).select_for_update().select_related("dataset").filter(pk=run_id).first()
        if run is None or run.status in (EvalRun.Status.SUCCEEDED, EvalRun.Status.FAILED):
            return None
        run.status = EvalRun.Status.RUNNING
        run.started_at = run.started_at or timezone.now()
        run.save(update_fields=["status", "started_at", "updated_at"])
        return run


def eval_run_execute(*, org_id: Any, run_id: Any) -> EvalRun | None:
    """Answers and scores every case still without a result, then the run's averages. None: nothing to do."""
    run = _claim(org_id, run_id)
    if run is None:
        return EvalRun.objects.for_org(org_id).filter(pk=run_id).first()
    dataset = run.dataset
    done = set(EvalResult.objects.for_org(org_id).filter(run=run).values_list("case_id", flat=True))
    cases = EvalCase.objects.for_org(org_id).filter(dataset=dataset).exclude(pk__in=done)
    cases = cases.select_related("collection", "expected_document", "created_by").order_by("created_at", "id")
    prompt = _run_prompt(run)
    for case in cases:
        try:
            result = score_case(run=run, dataset=dataset, case=case, prompt=prompt)
        except RUN_STOPPERS as exc:
            return eval_run_fail(run=run, reason=exc.message)
        try:
            with transaction.atomic():
                result.save()
        except IntegrityError:  # another delivery of this task scored it first
            continue
    return eval_run_finish(run=run)


def eval_run_fail(*, run: EvalRun, reason: str) -> EvalRun:
    run.status, run.error, run.finished_at = EvalRun.Status.FAILED, reason[:500], timezone.now()
    run.save(update_fields=["status", "error", "finished_at", "updated_at"])
    return run


def eval_run_finish(*, run: EvalRun) -> EvalRun:
    results = list(EvalResult.objects.for_org(run.organization_id).filter(run=run).values("scores", "passed"))
    run.scores = scorers.averages(r["scores"] for r in results)
    run.case_count = len(results)
    run.passed_count = sum(1 for r in results if r["passed"])
    run.status, run.finished_at = EvalRun.Status.SUCCEEDED, timezone.now()
    run.save(update_fields=["scores", "case_count", "passed_count", "status", "finished_at", "updated_at"])
    return run


def _passages(org: Any, citations: list[dict[str, Any]]) -> dict[str, str]:
    ids = [c["chunk_id"] for c in citations if c.get("chunk_id")]
    return {str(chunk.pk): documents.chunk_text(chunk) for chunk in Chunk.objects.for_org(org).filter(pk__in=ids)}


def _judge(caller: gateway.Caller, model: str, case: EvalCase, answer: str) -> scorers.Score:
    if not model or not case.rubric:
        return scorers.NOT_APPLICABLE
    try:
        request = ChatRequest(messages=scorers.judge_messages(case.input, answer, case.rubric))
        reply = gateway.chat(caller=caller, model=model, request=request, bypass_cache=True)
    except RUN_STOPPERS:
        raise
    except LLMError as exc:
        return scorers.Score(0.0, f"The judge could not answer: {exc.message}")
    return scorers.judge_verdict(reply.text)


def score_case(
    *, run: EvalRun, dataset: EvalDataset, case: EvalCase, prompt: ResolvedPrompt | None = None
) -> EvalResult:
    """The case's answer under the run's prompt, and its scores (an unsaved EvalResult)."""
    org = dataset.organization
    caller = gateway.Caller(org=org, feature="eval", user=run.created_by)
    result = EvalResult(organization_id=run.organization_id, run=run, case=case)
    started = time.monotonic()
    try:
        answer = documents.ask(caller=caller, question=case.input, collection=case.collection, model=run.model,
                               prompt=prompt or _run_prompt(run), bypass_cache=True)  # fmt: skip
    except RUN_STOPPERS:
        raise
    except ApplicationError as exc:  # the model failed, or the question is refused (guardrails, PII policy)
        result.error = exc.message[:500]
        result.latency_ms = round((time.monotonic() - started) * 1000)
        return result
    result.latency_ms = round((time.monotonic() - started) * 1000)
    result.answer, result.citations, result.call_id = answer.text, answer.citations, answer.call_id or ""
    scores = {
        "cited_document": scorers.cited_document(answer.citations, case.expected_document_id),
        "citations": scorers.citation_correctness(answer.text, answer.citations, _passages(org, answer.citations)),
        "groundedness": scorers.groundedness(answer.groundedness, len(answer.unsupported)),
        "answer": scorers.expected_answer(answer.text, case.expected_answer, case.match),
        "json_schema": scorers.json_schema(answer.text, case.json_schema),
        "judge": _judge(caller, dataset.judge_model, case, answer.text),
    }
    result.scores = {name: score.value for name, score in scores.items() if score.applies}
    result.reasons = {name: score.reason for name, score in scores.items() if score.applies}
    result.passed = scorers.passed(result.scores)
    return result


# --- Reading runs: results, and the difference between two -------------------------------------------------


def eval_run_results(*, org: Any, run: EvalRun) -> list[EvalResult]:
    return list(EvalResult.objects.for_org(org).filter(run=run).select_related("case").order_by("case__created_at",
                                                                                                "case_id"))  # fmt: skip


@dataclass(frozen=True)
class CaseDiff:
    case: EvalCase
    before: EvalResult | None
    after: EvalResult | None
    changes: dict[str, tuple[float | None, float | None]]  # scorer -> (before, after), where they differ

    @property
    def verdict(self) -> str:
        was = self.before.passed if self.before else None
        now = self.after.passed if self.after else None
        if was and now is False:
            return "regressed"
        if was is False and now:
            return "fixed"
        if was is None or now is None:
            return "only one run"
        return "changed" if self.changes else "same"


@dataclass(frozen=True)
class RunDiff:
    base: EvalRun
    other: EvalRun
    scores: dict[str, tuple[float | None, float | None]]  # scorer -> (base average, other average)
    cases: list[CaseDiff]

    @property
    def regressed(self) -> list[CaseDiff]:
        return [c for c in self.cases if c.verdict == "regressed"]


def eval_run_diff(*, org: Any, base: EvalRun, other: EvalRun) -> RunDiff:
    """Two runs case by case (matched by case): each scorer's averages, and the cases whose scores moved."""
    if base.dataset_id != other.dataset_id:
        raise ApplicationError("Only runs of the same dataset can be compared.", code="different_datasets")
    before = {r.case_id: r for r in eval_run_results(org=org, run=base)}
    after = {r.case_id: r for r in eval_run_results(org=org, run=other)}
    cases = []
    for case_id in sorted(set(before) | set(after), key=lambda c: (before.get(c) or after[c]).case.created_at):
        b, a = before.get(case_id), after.get(case_id)
        names = set(b.scores if b else {}) | set(a.scores if a else {})
        changes = {n: ((b.scores if b else {}).get(n), (a.scores if a else {}).get(n)) for n in sorted(names)}
        changes = {n: pair for n, pair in changes.items() if pair[0] != pair[1]}
        cases.append(CaseDiff((b or a).case, b, a, changes))  # type: ignore[union-attr]
    scored = [n for n in scorers.SCORERS if n in base.scores or n in other.scores]
    return RunDiff(base, other, {n: (base.scores.get(n), other.scores.get(n)) for n in scored}, cases)
