"""A/B tests of prompt versions, as the pages and the API show them: per variant, the calls it answered, its
thumbs-up rate, groundedness, latency and cost, and each challenger against the first variant (the control)
with a two-proportion z-test on the thumbs-up rate and a 95% confidence interval for the difference.

The experiments themselves (start, end, assignment) are saas/llm/prompts.py's; this module only reads. The
figures come from the ledger rows that carry the variant (LLMCall.experiment_variant) and the feedback on
them (on the row, for ask answers; on the chat message that the row answered).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Avg, Count, Q, Sum
from django.db.models.aggregates import Aggregate
from django.db.models.fields import FloatField

from agents.models import Feedback, Message
from saas.core.errors import NotFound
from saas.llm.models import Experiment, ExperimentVariant, LLMCall

Z_95 = 1.959963984540054  # the standard normal's 97.5th percentile


class Percentile(Aggregate):
    function = "PERCENTILE_CONT"
    name = "percentile"
    output_field = FloatField()
    template = "%(function)s(%(percentile)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression: Any, percentile: float, **extra: Any) -> None:
        super().__init__(expression, percentile=percentile, **extra)


@dataclass(frozen=True)
class Comparison:
    """A challenger's thumbs-up rate against the control's: a two-proportion z-test (pooled) and a Wald 95%
    confidence interval for the difference (challenger minus control)."""

    difference: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05

    @property
    def points(self) -> tuple[float, float, float]:
        """The difference and its interval in percentage points, for people."""
        return (100 * self.difference, 100 * self.ci_low, 100 * self.ci_high)


def two_proportion_test(ups_a: int, n_a: int, ups_b: int, n_b: int) -> Comparison | None:
    """B against A; None when either side has no ratings, or the pooled rate is 0 or 1 (no variance)."""
    if n_a <= 0 or n_b <= 0:
        return None
    p_a, p_b = ups_a / n_a, ups_b / n_b
    pooled = (ups_a + ups_b) / (n_a + n_b)
    variance = pooled * (1 - pooled) * (1 / n_a + 1 / n_b)
    if variance <= 0:
        return None
    z = (p_b - p_a) / math.sqrt(variance)
    p_value = math.erfc(abs(z) / math.sqrt(2))  # two-sided
    spread = Z_95 * math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    return Comparison(p_b - p_a, z, p_value, (p_b - p_a) - spread, (p_b - p_a) + spread)


@dataclass
class VariantStats:
    variant: ExperimentVariant
    calls: int = 0
    errors: int = 0
    ups: int = 0
    downs: int = 0
    groundedness: float | None = None
    grounded_calls: int = 0
    latency_p50: float | None = None
    latency_p95: float | None = None
    cost_usd: float = 0.0
    comparison: Comparison | None = None

    @property
    def rated(self) -> int:
        return self.ups + self.downs

    @property
    def thumbs_up_rate(self) -> float | None:
        return self.ups / self.rated if self.rated else None

    @property
    def thumbs_up_percent(self) -> float | None:
        return 100 * self.ups / self.rated if self.rated else None

    @property
    def cost_per_call(self) -> float | None:
        return self.cost_usd / self.calls if self.calls else None

    def as_json(self) -> dict[str, Any]:
        comparison = self.comparison
        return {
            "id": str(self.variant.pk), "name": self.variant.name, "weight": self.variant.weight,
            "version": {"id": str(self.variant.version_id), "number": self.variant.version.number,
                        "default": self.variant.version.organization_id is None},
            "calls": self.calls, "errors": self.errors, "thumbs_up": self.ups, "thumbs_down": self.downs,
            "thumbs_up_rate": self.thumbs_up_rate, "groundedness": self.groundedness,
            "latency_ms_p50": self.latency_p50, "latency_ms_p95": self.latency_p95,
            "cost_usd": round(self.cost_usd, 8), "cost_usd_per_call": self.cost_per_call,
            "versus_control": None if comparison is None else {
                "difference": comparison.difference, "z": comparison.z, "p_value": comparison.p_value,
                "ci95": [comparison.ci_low, comparison.ci_high], "significant": comparison.significant,
            },
        }  # fmt: skip


@dataclass
class ExperimentReport:
    experiment: Experiment
    variants: list[VariantStats] = field(default_factory=list)

    @property
    def enough_data(self) -> bool:
        """Every variant has at least the experiment's minimum of rated answers."""
        return bool(self.variants) and all(v.rated >= self.experiment.min_samples for v in self.variants)

    @property
    def leader(self) -> VariantStats | None:
        """The variant to promote: a challenger significantly better than the control, the best of them; else
        the control. None until there is enough data."""
        if not self.enough_data:
            return None
        better = [v for v in self.variants[1:] if v.comparison and v.comparison.significant and v.comparison.z > 0]
        return max(better, key=lambda v: v.thumbs_up_rate or 0) if better else self.variants[0]

    def as_json(self) -> dict[str, Any]:
        e = self.experiment
        leader = self.leader
        return {
            "id": str(e.pk), "key": e.key, "name": e.name, "status": e.status, "min_samples": e.min_samples,
            "created_at": e.created_at.isoformat(), "ended_at": e.ended_at.isoformat() if e.ended_at else None,
            "winner": str(e.winner_id) if e.winner_id else None,
            "enough_data": self.enough_data, "leader": str(leader.variant.pk) if leader else None,
            "variants": [v.as_json() for v in self.variants],
        }  # fmt: skip


def experiment_list(*, org: Any) -> list[Experiment]:
    return list(Experiment.objects.for_org(org).prefetch_related("variants__version").order_by("status", "-created_at"))


def experiment_get(*, org: Any, experiment_id: Any) -> Experiment:
    try:
        return Experiment.objects.for_org(org).get(pk=experiment_id)
    except (Experiment.DoesNotExist, ValueError, TypeError):
        raise NotFound("No such experiment.") from None


def experiment_report(*, experiment: Experiment) -> ExperimentReport:
    """Every variant's figures, in a few grouped queries over the experiment's ledger rows."""
    org = experiment.organization_id
    variants = list(ExperimentVariant.objects.for_org(org).filter(experiment=experiment).select_related("version"))
    stats = {v.pk: VariantStats(v) for v in variants}
    calls = LLMCall.objects.for_org(org).filter(experiment_variant__in=stats)
    for row in calls.values("experiment_variant").annotate(
        n=Count("id"), errors=Count("id", filter=Q(status=LLMCall.Status.ERROR)), cost=Sum("cost_usd"),
        grounded=Avg("groundedness"), grounded_n=Count("groundedness"),
        p50=Percentile("latency_ms", 0.5, filter=Q(status=LLMCall.Status.OK)),
        p95=Percentile("latency_ms", 0.95, filter=Q(status=LLMCall.Status.OK)),
    ):  # fmt: skip
        s = stats[row["experiment_variant"]]
        s.calls, s.errors, s.cost_usd = row["n"], row["errors"], float(row["cost"] or 0)
        s.groundedness = round(row["grounded"], 3) if row["grounded"] is not None else None
        s.grounded_calls, s.latency_p50, s.latency_p95 = row["grounded_n"], row["p50"], row["p95"]
    # Feedback on an ask answer names its ledger row; on a chat answer, the message that the row answered.
    call_ids = calls.values("id")
    on_calls = Feedback.objects.for_org(org).filter(llm_call__in=call_ids).values("llm_call__experiment_variant")
    answered = Message.objects.for_org(org).filter(llm_call__in=call_ids).values("id")
    on_messages = (
        Feedback.objects.for_org(org).filter(message__in=answered).values("message__llm_call__experiment_variant")
    )
    for rows, column in ((on_calls, "llm_call__experiment_variant"),
                         (on_messages, "message__llm_call__experiment_variant")):  # fmt: skip
        for row in rows.annotate(ups=Count("id", filter=Q(rating=1)), downs=Count("id", filter=Q(rating=-1))):
            if (rated := stats.get(row[column])) is not None:
                rated.ups += row["ups"]
                rated.downs += row["downs"]
    ordered = [stats[v.pk] for v in variants]
    if ordered:
        control = ordered[0]
        for challenger in ordered[1:]:
            challenger.comparison = two_proportion_test(control.ups, control.rated, challenger.ups, challenger.rated)
    return ExperimentReport(experiment, ordered)
