"""The regression gate: before a prompt version becomes `production`, every dataset that gates the prompt is
run twice, now, on the same documents: once with the current production text and once with the candidate's.
The promotion is refused when any score's average falls by more than the dataset's `max_drop`; the refusal
names the scores and the cases that got worse. The browser's promotion, the API's and
`manage.py eval_gate` all decide here; promotions and refusals are audit events.
"""

from dataclasses import dataclass, field
from typing import Any

from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from analytics import eval_runs, scorers
from analytics.eval_runs import CaseDiff
from analytics.models import EvalCase, EvalDataset, EvalRun
from saas.llm import prompts
from saas.llm.prompts import ResolvedPrompt


@dataclass(frozen=True)
class Drop:
    scorer: str
    production: float
    candidate: float | None
    allowed: float

    @property
    def fall(self) -> float:
        return round(self.production - (self.candidate or 0.0), 4)

    @property
    def label(self) -> str:
        return scorers.LABELS.get(self.scorer, self.scorer)


@dataclass(frozen=True)
class DatasetVerdict:
    dataset: EvalDataset
    candidate: EvalRun
    baseline: EvalRun | None  # None: no production version yet, nothing to fall from
    scores: dict[str, tuple[float | None, float | None]]  # scorer -> (production, candidate) averages
    drops: list[Drop]
    failing: list[CaseDiff]  # the cases that got worse on a scorer that fell too far, or stopped passing

    @property
    def refused(self) -> bool:
        return bool(self.drops) or self.candidate.status != EvalRun.Status.SUCCEEDED


@dataclass(frozen=True)
class GateDecision:
    prompt_key: str
    candidate_version: int | None
    production_version: int | None
    verdicts: list[DatasetVerdict] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return not any(v.refused for v in self.verdicts)

    @property
    def message(self) -> str:
        name = f"{self.prompt_key} v{self.candidate_version}" if self.candidate_version else self.prompt_key
        if not self.verdicts:
            return f"No dataset gates {self.prompt_key}: {name} passes without a check."
        if self.allowed:
            return f"{name} passes the gate on {len(self.verdicts)} dataset{'s' if len(self.verdicts) != 1 else ''}."
        parts = []
        for v in self.verdicts:
            if v.candidate.status != EvalRun.Status.SUCCEEDED:
                parts.append(f"{v.dataset.name}: the run failed ({v.candidate.error or 'no reason'})")
            for d in v.drops:
                after = "n/a" if d.candidate is None else f"{d.candidate:.2f}"
                parts.append(f"{v.dataset.name}: {d.label} fell from {d.production:.2f} to {after} "
                             f"(at most {d.allowed:.2f} allowed)")  # fmt: skip
        return f"{name} is refused: " + "; ".join(parts) + "."

    def table(self) -> list[str]:
        """The comparison as lines of text (the CLI prints it)."""
        lines = [f"{'dataset':<24} {'score':<22} {'production':>10} {'candidate':>10} {'max drop':>9}  verdict"]
        for v in self.verdicts:
            dropped = {d.scorer for d in v.drops}
            for name, (before, after) in v.scores.items():
                show = ["-" if x is None else f"{x:.3f}" for x in (before, after)]
                verdict = "DROP" if name in dropped else "ok"
                lines.append(f"{v.dataset.name[:24]:<24} {scorers.LABELS.get(name, name)[:22]:<22} {show[0]:>10} "
                             f"{show[1]:>10} {v.dataset.max_drop:>9.3f}  {verdict}")  # fmt: skip
            if v.candidate.status != EvalRun.Status.SUCCEEDED:
                lines.append(f"{v.dataset.name[:24]:<24} the candidate's run failed: {v.candidate.error}")
            for case in v.failing:
                moved = ", ".join(f"{scorers.LABELS.get(n, n)} {b if b is not None else '-'} -> "
                                  f"{a if a is not None else '-'}" for n, (b, a) in case.changes.items())  # fmt: skip
                lines.append(f"  failing case {case.case.pk}: {case.case.input[:60]!r} ({moved})")
        return lines


def _run_now(*, org: Any, user: Any, dataset: EvalDataset, prompt: ResolvedPrompt, model: str) -> EvalRun:
    run = eval_runs.eval_run_create(org=org, user=user, dataset=dataset, prompt=prompt, model=model,
                                    purpose=EvalRun.Purpose.GATE)  # fmt: skip
    return eval_runs.eval_run_execute(org_id=org.pk, run_id=run.pk) or run


def _verdict(org: Any, dataset: EvalDataset, baseline: EvalRun | None, candidate: EvalRun) -> DatasetVerdict:
    if baseline is None or baseline.status != EvalRun.Status.SUCCEEDED:
        names = [n for n in scorers.SCORERS if n in candidate.scores]
        return DatasetVerdict(dataset, candidate, baseline, {n: (None, candidate.scores[n]) for n in names}, [], [])
    diff = eval_runs.eval_run_diff(org=org, base=baseline, other=candidate)
    drops = [
        Drop(name, before, after, dataset.max_drop)
        for name, (before, after) in diff.scores.items()
        if before is not None and after is not None and before - after > dataset.max_drop + 1e-9
    ]
    dropped = {d.scorer for d in drops}
    failing = [
        case for case in diff.cases
        if case.verdict == "regressed"
        or any(n in dropped and b is not None and (a is None or a < b) for n, (b, a) in case.changes.items())
    ]  # fmt: skip
    return DatasetVerdict(dataset, candidate, baseline, diff.scores, drops, failing if drops else diff.regressed)


def gate_evaluate(
    *, org: Any, user: Any, candidate: ResolvedPrompt, production: ResolvedPrompt | None, model: str = "default",
) -> GateDecision:  # fmt: skip
    """Runs every dataset of the candidate's prompt key (with cases) with both prompts, now, and compares them.
    Without a production prompt there is nothing to fall from: the candidate's runs are recorded and it passes."""
    key = candidate.key
    gated = EvalDataset.objects.for_org(org).filter(prompt_key=key, pk__in=EvalCase.objects.for_org(org).values(
        "dataset_id")).order_by("name")  # fmt: skip
    verdicts = []
    for dataset in gated:
        baseline = None
        if production is not None:
            baseline = _run_now(org=org, user=user, dataset=dataset, prompt=production, model=model)
        run = _run_now(org=org, user=user, dataset=dataset, prompt=candidate, model=model)
        verdicts.append(_verdict(org, dataset, baseline, run))
    return GateDecision(key, candidate.number or None, production.number or None if production else None, verdicts)


def decision_details(decision: GateDecision) -> dict[str, Any]:
    """The decision as JSON: what a refusal carries (the API's error details, the audit event's metadata)."""
    return {
        "prompt": decision.prompt_key, "candidate_version": decision.candidate_version,
        "production_version": decision.production_version,
        "datasets": [
            {"dataset": str(v.dataset.pk), "name": v.dataset.name, "max_drop": v.dataset.max_drop,
             "candidate_run": str(v.candidate.pk), "baseline_run": str(v.baseline.pk) if v.baseline else None,
             "candidate_run_url": reverse("eval-run", kwargs={"org_slug": v.dataset.organization.slug,
                                                              "run_id": v.candidate.pk}),
             "diff_url": _diff_url(v),
             "scores": {n: {"production": b, "candidate": a} for n, (b, a) in v.scores.items()},
             "drops": [{"scorer": d.scorer, "production": d.production, "candidate": d.candidate,
                        "allowed": d.allowed} for d in v.drops],
             "failing_cases": [{"case": str(c.case.pk), "changes": {n: list(p) for n, p in c.changes.items()}}
                               for c in v.failing][:50]}
            for v in decision.verdicts
        ],
    }  # fmt: skip


def _diff_url(verdict: DatasetVerdict) -> str | None:
    if verdict.baseline is None:
        return None
    url = reverse(
        "eval-run-diff", kwargs={"org_slug": verdict.dataset.organization.slug, "run_id": verdict.candidate.pk}
    )
    return f"{url}?against={verdict.baseline.pk}"


def refusal_html(refused: prompts.PromotionRefused) -> SafeString:
    """A refusal for a page's message: the reason, and for each dataset a link to its failing cases (the
    candidate's run against production's, case by case)."""
    links = [
        format_html('<a href="{}">{}: {} failing case{}</a>', d.get("diff_url") or d["candidate_run_url"], d["name"],
                    len(d["failing_cases"]), "" if len(d["failing_cases"]) == 1 else "s")
        for d in (refused.details or {}).get("datasets", []) if d.get("drops") or d.get("failing_cases")
    ]  # fmt: skip
    return format_html("{} {}", refused.message, format_html_join(" · ", "{}", ((link,) for link in links)))


def promotion_check(*, org: Any, version: Any, principal: Any = None) -> None:
    """The regression gate as a promotion check (registered in analytics/apps.py): refuses, with the failing
    cases, a version whose scores fall beyond a dataset's threshold against what production uses now. The
    prompts layer audits the refusal or the promotion."""
    if org is None:  # the operator's defaults: no team's dataset gates them
        return
    key = version.prompt.key
    production = prompts.prompt_resolve(org=org, key=key)
    if production.version_id == version.pk:
        return
    candidate = eval_runs.run_prompt(org=org, key=key, version=version)
    user = getattr(principal, "user", None)
    decision = gate_evaluate(org=org, user=user, candidate=candidate, production=production)
    if not decision.allowed:
        raise prompts.PromotionRefused(decision.message, details=decision_details(decision))


def gate_audit(*, org: Any, decision: GateDecision, principal: Any = None, user: Any = None,
               origin: Any = None) -> None:  # fmt: skip
    """A gate checked outside a promotion (`manage.py eval_gate`, in CI) as an audit event: `eval.gate_passed`
    or `eval.gate_refused`. Promotions and their refusals are audited by the prompts layer."""
    from accounts.services import audit_record

    action = "eval.gate_passed" if decision.allowed else "eval.gate_refused"
    label = (
        f"{decision.prompt_key} v{decision.candidate_version}" if decision.candidate_version else decision.prompt_key
    )
    audit_record(org=org, action=action, principal=principal, user=user, target_label=label, origin=origin,
                 metadata={**decision_details(decision), "message": decision.message[:1000]})  # fmt: skip
