"""The analytics app's data.

Evals (analytics/evals.py): datasets of cases, runs of a prompt version against a dataset, and one result per
case and run. Questions, answers and comments are the team's content: encrypted at rest like the ledger's
(saas.core.crypto).

Dashboards: per-hour aggregates of the ledger, and per-day sums of those for whole days (analytics/rollups.py
writes them, analytics/insights.py reads them): a page over 90 days reads a row per day, feature and model,
never the raw ledger."""

from decimal import Decimal
from typing import ClassVar

from django.contrib.postgres.fields import ArrayField
from django.db import models

from saas.core.crypto import encrypted_json, encrypted_text
from saas.core.tenancy import OrgOwnedModel


class EvalDataset(OrgOwnedModel):
    """Cases that a prompt's answers are scored on. Promoting a version of `prompt_key` to production runs every
    dataset of that prompt and is refused when a score's average falls by more than `max_drop`."""

    name = models.CharField(max_length=100)
    description = models.CharField(max_length=500, blank=True)
    # The prompt whose promotions it gates. Its cases are answered through the ask path, so ask.system (which chat
    # over collections uses too) is the prompt a dataset can gate today.
    prompt_key = models.CharField(
        max_length=64, default="ask.system", help_text="The prompt whose promotions it gates."
    )
    max_drop = models.FloatField(
        default=0.05, help_text="The largest fall of any score's average (0 to 1) the gate lets through."
    )
    judge_model = models.CharField(
        max_length=64, blank=True, help_text="A model alias that judges answers by each case's rubric; empty: none."
    )
    created_by = models.ForeignKey("accounts.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta(OrgOwnedModel.Meta):
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["organization", "name"], name="analytics_dataset_unique_name"),
            models.CheckConstraint(condition=models.Q(max_drop__gte=0, max_drop__lte=1),
                                   name="analytics_dataset_max_drop_range"),
        ]  # fmt: skip

    def __str__(self) -> str:
        return self.name


class EvalCase(OrgOwnedModel):
    """One question and what a good answer does: contain (or equal, or match) an expected answer, cite an
    expected document, be valid JSON for a schema, satisfy a rubric. Every check is optional."""

    class Source(models.TextChoices):
        MANUAL = "manual", "Written"
        FEEDBACK = "feedback", "Thumbs-down"
        REQUEST = "request", "Request log"
        IMPORT = "import", "Imported"

    class Match(models.TextChoices):
        CONTAINS = "contains", "Contains"
        EXACT = "exact", "Exact"
        REGEX = "regex", "Regular expression"

    dataset = models.ForeignKey(EvalDataset, on_delete=models.CASCADE, related_name="cases")
    input_encrypted = models.TextField()
    collection = models.ForeignKey(
        "documents.Collection", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    expected_answer_encrypted = models.TextField(blank=True)
    match = models.CharField(max_length=10, choices=Match.choices, default=Match.CONTAINS)
    expected_document = models.ForeignKey(
        "documents.Document", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    json_schema = models.JSONField(null=True, blank=True)
    rubric = models.TextField(blank=True)
    note_encrypted = models.TextField(blank=True)  # the thumbs-down's comment, or why the case was written
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.MANUAL)
    feedback = models.ForeignKey("agents.Feedback", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    llm_call = models.ForeignKey("llm.LLMCall", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey("accounts.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta(OrgOwnedModel.Meta):
        ordering: ClassVar = ["created_at", "id"]
        constraints: ClassVar = [
            # One click twice makes one case.
            models.UniqueConstraint(fields=["dataset", "feedback"], name="analytics_case_once_per_feedback",
                                    condition=models.Q(feedback__isnull=False)),
            models.UniqueConstraint(fields=["dataset", "llm_call"], name="analytics_case_once_per_call",
                                    condition=models.Q(llm_call__isnull=False)),
        ]  # fmt: skip

    input = encrypted_text("input_encrypted")
    expected_answer = encrypted_text("expected_answer_encrypted")
    note = encrypted_text("note_encrypted")

    def __str__(self) -> str:
        return self.input[:80]


class EvalRun(OrgOwnedModel):
    """A prompt version's answers to every case of a dataset, scored (analytics.eval_run in Celery, or inline
    for the gate). The prompt's text is kept as it was run."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Finished"
        FAILED = "failed", "Failed"

    class Purpose(models.TextChoices):
        MANUAL = "manual", "Run by hand"
        GATE = "gate", "Promotion gate"

    dataset = models.ForeignKey(EvalDataset, on_delete=models.CASCADE, related_name="runs")
    prompt_key = models.CharField(max_length=64)
    version = models.ForeignKey("llm.PromptVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    prompt_version = models.PositiveIntegerField(null=True, blank=True, help_text="The version's number; empty: a text "
                                                 "tried without saving it as a version.")  # fmt: skip
    system_prompt = models.TextField()  # the text as run (a version's text cannot change; a tried text can go)
    model = models.CharField(max_length=64, default="default")
    purpose = models.CharField(max_length=10, choices=Purpose.choices, default=Purpose.MANUAL)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    error = models.CharField(max_length=500, blank=True)
    scores = models.JSONField(default=dict, blank=True)  # {scorer: the average over the cases it applies to}
    case_count = models.PositiveIntegerField(default=0)
    passed_count = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey("accounts.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta(OrgOwnedModel.Meta):
        indexes: ClassVar = [models.Index(fields=["organization", "dataset", "-created_at"], name="analytics_run_ds")]

    def __str__(self) -> str:
        return f"{self.dataset.name}: {self.version_label}"

    @property
    def version_label(self) -> str:
        return (
            f"{self.prompt_key} v{self.prompt_version}" if self.prompt_version else f"{self.prompt_key} (unsaved text)"
        )


class EvalResult(OrgOwnedModel):
    """One case's answer in one run, and its scores (1 pass, 0 fail, in between for groundedness and the judge;
    a scorer that does not apply to the case is left out)."""

    run = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="results")
    case = models.ForeignKey(EvalCase, on_delete=models.CASCADE, related_name="+")
    answer_encrypted = models.TextField(blank=True)
    citations_encrypted = models.TextField(blank=True)  # quotes of the team's documents
    scores = models.JSONField(default=dict, blank=True)
    reasons = models.JSONField(default=dict, blank=True)  # {scorer: why it scored so, in a sentence}
    passed = models.BooleanField(default=False)
    error = models.CharField(max_length=500, blank=True)
    call_id = models.CharField(max_length=64, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)

    class Meta(OrgOwnedModel.Meta):
        ordering: ClassVar = ["created_at", "id"]
        constraints: ClassVar = [models.UniqueConstraint(fields=["run", "case"], name="analytics_result_once")]

    answer = encrypted_text("answer_encrypted")
    citations = encrypted_json("citations_encrypted", list)


# Latency and time-to-first-token histograms: the upper bound (ms, inclusive) of each bucket; one more bucket
# counts what is above the last bound. Percentiles are read from these buckets (interpolated inside one), so
# they are as exact as a bucket is narrow: about a quarter of its value.
LATENCY_BOUNDS_MS = (25, 50, 75, 100, 150, 200, 300, 400, 500, 750, 1000, 1500, 2000, 3000, 4000, 5000, 7500,
                     10000, 15000, 20000, 30000, 60000, 120000)  # fmt: skip
LATENCY_BUCKETS = len(LATENCY_BOUNDS_MS) + 1
# Groundedness (0 to 1, the share of an answer's sentences its citations support) in tenths: [0, 0.1), ...,
# [0.9, 1.0), and 1.0 on its own (a fully supported answer, the common case).
GROUNDEDNESS_BUCKETS = 11


def _zeros(size: int) -> list[int]:
    return [0] * size


def _latency_zeros() -> list[int]:
    return _zeros(LATENCY_BUCKETS)


def _groundedness_zeros() -> list[int]:
    return _zeros(GROUNDEDNESS_BUCKETS)


class RollupFigures(OrgOwnedModel):
    """Counts, sums and histograms of one org's ledger for one feature and one model over some time (an hour, a
    day): any range adds rows up. Feedback counts when it was given (under its call's feature and model)."""

    feature = models.CharField(max_length=16)
    model = models.CharField(max_length=64, help_text="The model that answered (or was asked for, if none did).")
    requests = models.PositiveIntegerField(default=0)
    ok = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    cancelled = models.PositiveIntegerField(default=0)
    blocked = models.PositiveIntegerField(default=0)
    error_kinds = models.JSONField(default=dict, blank=True, help_text="Failed calls per error class.")
    cache_hits = models.PositiveIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=18, decimal_places=8, default=Decimal(0))
    cost_saved_usd = models.DecimalField(max_digits=18, decimal_places=8, default=Decimal(0))
    latency_sum_ms = models.BigIntegerField(default=0)
    latency_hist = ArrayField(models.PositiveIntegerField(), default=_latency_zeros)
    ttft_count = models.PositiveIntegerField(default=0)
    ttft_sum_ms = models.BigIntegerField(default=0)
    ttft_hist = ArrayField(models.PositiveIntegerField(), default=_latency_zeros)
    grounded_count = models.PositiveIntegerField(default=0)
    grounded_sum = models.FloatField(default=0.0)
    grounded_hist = ArrayField(models.PositiveIntegerField(), default=_groundedness_zeros)
    feedback_up = models.PositiveIntegerField(default=0)
    feedback_down = models.PositiveIntegerField(default=0)

    class Meta(OrgOwnedModel.Meta):
        abstract = True


class HourlyRollup(RollupFigures):
    """One org's ledger for one UTC hour, one feature and one model (analytics/rollups.py writes it from the
    ledger)."""

    hour = models.DateTimeField(help_text="The start of the UTC hour.")

    class Meta(RollupFigures.Meta):
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["organization", "hour", "feature", "model"], name="analytics_rollup_key"),
        ]


class DailyRollup(RollupFigures):
    """One org's ledger for one whole UTC day, one feature and one model: the sum of that day's HourlyRollup rows,
    folded once every hour of the day is rolled up, so that a range of weeks reads a row per day, not 24."""

    day = models.DateTimeField(help_text="The start of the UTC day.")

    class Meta(RollupFigures.Meta):
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["organization", "day", "feature", "model"], name="analytics_daily_key"),
        ]


class RollupState(OrgOwnedModel):
    """How far an org's ledger is rolled up: the hours before `rolled_until` are in HourlyRollup; the dashboard
    reads the hours from there on (the open hour, or more when the beat was down) from the ledger itself."""

    rolled_until = models.DateTimeField()
    # The days before this one (a UTC midnight, at most the day of `rolled_until`) are also in DailyRollup, each
    # the sum of its hours; empty: none folded yet (the next beat run folds every whole day rolled up so far).
    days_until = models.DateTimeField(null=True, blank=True)

    class Meta(OrgOwnedModel.Meta):
        constraints: ClassVar = [models.UniqueConstraint(fields=["organization"], name="analytics_rollupstate_one")]
