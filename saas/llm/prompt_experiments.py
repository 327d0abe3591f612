"""Prompt experiments: split an org's traffic on one prompt key between versions, then end the experiment,
promoting the winner through the gate (saas/llm/prompts.py: prompt_label_set). Which variant a member or key gets
is decided when a call resolves its prompt (prompts.prompt_resolve, prompts.assign): stable per subject, with no
table written on the hot path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from saas.core.errors import ApplicationError, Conflict, NotFound
from saas.llm.prompt_models import Experiment, ExperimentVariant, PromptVersion
from saas.llm.prompts import prompt_audit, prompt_label_set, prompt_resolve

MAX_VARIANTS = 4


def experiment_start(
    *, org: Any, key: str, name: str, versions: Sequence[PromptVersion], weights: Sequence[int] | None = None,
    min_samples: int = 100, principal: Any = None, origin: Any = None,
) -> Experiment:  # fmt: skip
    """Split the org's traffic on `key` between versions (2 to 4, each the org's own or the operator
    default's, all of `key`), by weight (equal by default). The version in production now is the control
    (variant A), whatever its place in `versions`."""
    name = " ".join(name.split())
    if not name or len(name) > 120:
        raise ApplicationError("An experiment's name is 1 to 120 characters.", code="invalid")
    if not 2 <= len(versions) <= MAX_VARIANTS:
        raise ApplicationError(f"An experiment compares 2 to {MAX_VARIANTS} versions.", code="invalid")
    if len({v.pk for v in versions}) != len(versions):
        raise ApplicationError("Each version may appear once.", code="invalid")
    org_id = getattr(org, "pk", org)
    for version in versions:
        if version.organization_id not in (None, org_id):
            raise NotFound("No such prompt version.")
        if version.prompt.key != key:
            raise ApplicationError(f"Every version must be a version of {key}.", code="invalid")
    weights = list(weights) if weights else [100 // len(versions)] * len(versions)
    if len(weights) != len(versions) or any(not isinstance(w, int) or w < 1 or w > 1000 for w in weights):
        raise ApplicationError("Give one weight (1 to 1000) per version.", code="invalid")
    if not 1 <= min_samples <= 1_000_000:
        raise ApplicationError("The minimum sample is 1 to 1,000,000 rated answers.", code="invalid")
    # The control (variant A) is what is in production now; the others follow in the order given.
    current = prompt_resolve(org=org, key=key).version_id
    pairs = sorted(zip(versions, weights, strict=True), key=lambda pair: pair[0].pk != current)
    versions, weights = [v for v, _ in pairs], [w for _, w in pairs]
    user = principal.user if principal is not None else None
    try:
        with transaction.atomic():
            experiment = Experiment.objects.for_org(org).create(organization_id=org_id, key=key, name=name,
                                                                  min_samples=min_samples, created_by=user)  # fmt: skip
            for position, (version, weight) in enumerate(zip(versions, weights, strict=True)):
                ExperimentVariant.objects.for_org(org).create(
                    organization_id=org_id, experiment=experiment, position=position, name=chr(ord("A") + position),
                    version=version, weight=weight,
                )  # fmt: skip
            prompt_audit(org, "experiment.started", principal, experiment,
                   {"key": key, "variants": [f"{chr(ord('A') + i)}: v{v.number}" for i, v in enumerate(versions)],
                    "weights": weights}, origin)  # fmt: skip
    except IntegrityError:
        raise Conflict(f"An experiment on {key} is already running; end it first.", code="experiment_running") from None
    return experiment


def experiment_end(
    *, experiment: Experiment, winner: ExperimentVariant | None = None, principal: Any = None, origin: Any = None
) -> Experiment:
    """End a running experiment; with a winner, promote its version to production first, through the gate (a
    refusal leaves the experiment running and says why)."""
    org = experiment.organization
    if experiment.status != Experiment.Status.RUNNING:
        raise Conflict("This experiment has ended already.", code="experiment_ended")
    if winner is not None:
        if winner.experiment_id != experiment.pk:
            raise NotFound("No such variant.")
        prompt_label_set(org=org, version=winner.version, principal=principal, origin=origin)
    with transaction.atomic():
        locked = Experiment.objects.for_org(org).select_for_update().get(pk=experiment.pk)
        if locked.status != Experiment.Status.RUNNING:
            raise Conflict("This experiment has ended already.", code="experiment_ended")
        locked.status = Experiment.Status.ENDED
        locked.ended_at = timezone.now()
        locked.winner = winner
        locked.save(update_fields=["status", "ended_at", "winner", "updated_at"])
        prompt_audit(org, "experiment.ended", principal, locked,
               {"key": locked.key, "winner": winner.name if winner else None,
                "version": winner.version.number if winner else None}, origin)  # fmt: skip
    return locked
