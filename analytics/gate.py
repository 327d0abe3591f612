"""The regression gate: before a prompt version becomes `production`, every dataset that gates the prompt is
run twice, now, on the same documents: once with the current production text and once with the candidate's.
The promotion is refused when any score's average falls by more than the dataset's `max_drop`; the refusal
names the scores and the cases that got worse. The browser's promotion, the API's and
`manage.py eval_gate` all decide here; promotions and refusals are audit events.
"""

from dataclasses import dataclass, field
from typing import Any

from analytics import eval_runs, scorers
from analytics.eval_runs import CaseDiff
from analytics.models import EvalCase, EvalDataset, EvalRun


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


def _run_now(*, org: Any, user: Any, dataset: EvalDataset, text: str, prompt_key: str, version: int | None,
             model: str) -> EvalRun:  # fmt: skip
    run = eval_runs.eval_run_create(org=org, user=user, dataset=dataset, system_prompt=text, prompt_key=prompt_key,
                                    prompt_version=version, model=model, purpose=EvalRun.Purpose.GATE)  # fmt: skip
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
    *, org: Any, user: Any, prompt_key: str, candidate_text: str, candidate_version: int | None,
    production_text: str | None, production_version: int | None, model: str = "default",
) -> GateDecision:  # fmt: skip
    """Runs every dataset of `prompt_key` (with cases) with both texts, now, and compares them. Without a
    production text there is nothing to fall from: the candidate's runs are recorded and it passes."""
    gated = EvalDataset.objects.for_org(org).filter(prompt_key=prompt_key, pk__in=EvalCase.objects.for_org(org).values(
        "dataset_id")).order_by("name")  # fmt: skip
    verdicts = []
    for dataset in gated:
        baseline = None
        if production_text is not None:
            baseline = _run_now(org=org, user=user, dataset=dataset, text=production_text, prompt_key=prompt_key,
                                version=production_version, model=model)  # fmt: skip
        candidate = _run_now(org=org, user=user, dataset=dataset, text=candidate_text, prompt_key=prompt_key,
                             version=candidate_version, model=model)  # fmt: skip
        verdicts.append(_verdict(org, dataset, baseline, candidate))
    return GateDecision(prompt_key, candidate_version, production_version, verdicts)


def gate_audit(*, org: Any, decision: GateDecision, principal: Any = None, user: Any = None, origin: Any = None,
               target: Any = None) -> None:  # fmt: skip
    """The decision in the audit log: `prompt.promotion_refused`, or `prompt.promotion_passed_gate` (the
    promotion itself is audited where it is made)."""
    from accounts.services import audit_record

    action = "prompt.promotion_passed_gate" if decision.allowed else "prompt.promotion_refused"
    metadata = {
        "prompt": decision.prompt_key, "candidate_version": decision.candidate_version,
        "production_version": decision.production_version, "message": decision.message[:1000],
        "datasets": [
            {"dataset": str(v.dataset.pk), "name": v.dataset.name, "candidate_run": str(v.candidate.pk),
             "baseline_run": str(v.baseline.pk) if v.baseline else None,
             "drops": [{"scorer": d.scorer, "production": d.production, "candidate": d.candidate,
                        "allowed": d.allowed} for d in v.drops],
             "failing_cases": [str(c.case.pk) for c in v.failing][:50]}
            for v in decision.verdicts
        ],
    }  # fmt: skip
    label = f"{decision.prompt_key} v{decision.candidate_version}" if decision.candidate_version else decision.prompt_key
    audit_record(org=org, action=action, principal=principal, user=user, target=target, target_label=label,
                 origin=origin, metadata=metadata)  # fmt: skip
