"""Prompts as data (imported by saas/llm/models.py): the system prompts of ask, chat and the crews, versioned.

A `Prompt` is one key ("ask.system", "crew.agent", ...) as the operator ships it (`organization` empty: the
default every org uses) or as an org overrides it. Its `PromptVersion`s are immutable (text, model,
parameters, author, note): editing a prompt adds a version. The labels `production` and `staging` point at
one version each; an org's prompt may point its labels at one of its own versions or at one of the operator
default's (going back to the default is a label, not a copy).

An `Experiment` splits one key's traffic in an org between versions (its `ExperimentVariant`s, by weight),
assigning each member (or API key) to a variant by a hash, so the same member always gets the same variant.
saas/llm/prompts.py holds the reads and writes; analytics/ the pages and the statistics.
"""

from typing import Any, ClassVar

from django.db import models

from saas.core.models import BaseModel
from saas.core.tenancy import OrgOwnedModel, OrgScopeMissing, current_org_id


class PromptError(Exception):
    pass


class VersionImmutable(PromptError):
    """A saved prompt version was changed: versions are never edited, a new one is added instead."""


class PromptScopedManager(models.Manager["Any"]):
    """The operator's defaults and the org in scope's own prompts; no org in scope is an error, as for
    OrgOwnedModel. `for_org(org)` names the org explicitly."""

    def get_queryset(self) -> models.QuerySet[Any]:
        org_id = current_org_id()
        if org_id is None:
            raise OrgScopeMissing(f"{self.model.__name__}.objects was queried with no org in scope.")
        return self.for_org(org_id)

    def for_org(self, org: Any) -> models.QuerySet[Any]:
        org_id = getattr(org, "pk", org)
        return super().get_queryset().filter(models.Q(organization__isnull=True) | models.Q(organization_id=org_id))

    def defaults(self) -> models.QuerySet[Any]:
        return super().get_queryset().filter(organization__isnull=True)


class Prompt(BaseModel):
    """A system prompt key: the operator's default (no org) or an org's override."""

    class Label(models.TextChoices):
        PRODUCTION = "production", "Production"
        STAGING = "staging", "Staging"

    organization = models.ForeignKey(
        "accounts.Organization", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    key = models.CharField(max_length=100, help_text='e.g. "ask.system", "crew.agent", "crew.agent.writer".')
    title = models.CharField(max_length=120, blank=True)
    description = models.TextField(blank=True)
    production = models.ForeignKey(
        "llm.PromptVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    staging = models.ForeignKey("llm.PromptVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    objects: Any = PromptScopedManager()
    all_orgs: Any = models.Manager()

    class Meta:
        base_manager_name = "all_orgs"
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["key"], condition=models.Q(organization__isnull=True),
                                    name="llm_prompt_default_key"),
            models.UniqueConstraint(fields=["organization", "key"], condition=models.Q(organization__isnull=False),
                                    name="llm_prompt_org_key"),
        ]  # fmt: skip

    def __str__(self) -> str:
        return self.key

    @property
    def is_default(self) -> bool:
        return self.organization_id is None


class PromptVersion(BaseModel):
    """One immutable version of a prompt. The database refuses an UPDATE of its content (a trigger, see the
    migration); `save()` refuses it earlier with a clear error."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="versions")
    organization = models.ForeignKey(  # the prompt's, kept here for scoping and the org's erasure
        "accounts.Organization", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    number = models.PositiveIntegerField()
    text = models.TextField(blank=True)
    model = models.CharField(max_length=64, blank=True, help_text="Empty: the model the caller asks for.")
    parameters = models.JSONField(default=dict, blank=True, help_text='e.g. {"temperature": 0.2, "max_tokens": 800}')
    author = models.ForeignKey("accounts.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    note = models.CharField(max_length=300, blank=True)

    objects: Any = PromptScopedManager()
    all_orgs: Any = models.Manager()

    class Meta:
        base_manager_name = "all_orgs"
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["prompt", "number"], name="llm_promptversion_number"),
        ]

    def __str__(self) -> str:
        return f"{self.prompt.key} v{self.number}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise VersionImmutable("A prompt version cannot be edited: add a new version instead.")
        super().save(*args, **kwargs)


class Experiment(OrgOwnedModel):
    """An A/B test of one prompt key in one org: traffic split between versions, per member (or API key)."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        ENDED = "ended", "Ended"

    key = models.CharField(max_length=100)
    name = models.CharField(max_length=120)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.RUNNING)
    min_samples = models.PositiveIntegerField(
        default=100, help_text="Rated answers per variant before the comparison is shown as meaningful."
    )
    created_by = models.ForeignKey("accounts.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    ended_at = models.DateTimeField(null=True, blank=True)
    winner = models.ForeignKey(
        "llm.ExperimentVariant", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta(OrgOwnedModel.Meta):
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["organization", "key"], condition=models.Q(status="running"),
                                    name="llm_experiment_one_running_per_key"),
        ]  # fmt: skip

    def __str__(self) -> str:
        return self.name


class ExperimentVariant(OrgOwnedModel):
    """One arm of an experiment: a prompt version and its share of the traffic (weights are fixed once the
    experiment starts, so that assignments stay put)."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="variants")
    name = models.CharField(max_length=20)
    position = models.PositiveSmallIntegerField(default=0)
    version = models.ForeignKey(PromptVersion, on_delete=models.PROTECT, related_name="+")
    weight = models.PositiveSmallIntegerField(default=50)

    class Meta(OrgOwnedModel.Meta):
        ordering: ClassVar = ["position"]
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["experiment", "position"], name="llm_variant_position"),
        ]

    def __str__(self) -> str:
        return self.name
