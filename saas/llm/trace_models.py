"""Traces: one per ask, chat turn, generate call and crew run, with its spans (retrieval, each model call, each
tool call, each task step). Written once, at the trace's end, by saas/llm/tracing.py; read by analytics.

They hold no free text: a retrieval span keeps passage and document ids with their scores, a model call its
model, tokens, cost and ledger row id, a tool call the tool's name. The prompts and answers stay in the ledger
(masked and encrypted), where the request log's visibility rules apply."""

from decimal import Decimal
from typing import ClassVar

from django.db import models

from saas.core.tenancy import OrgOwnedModel


class Trace(OrgOwnedModel):
    class Kind(models.TextChoices):
        ASK = "ask", "Ask"
        CHAT = "chat", "Chat turn"
        GENERATE = "generate", "Generate"
        COMPLETION = "completion", "Chat completion (API)"
        CREW_RUN = "crew_run", "Crew run"

    class Status(models.TextChoices):
        OK = "ok", "OK"
        ERROR = "error", "Error"
        CANCELLED = "cancelled", "Cancelled"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=200, blank=True)
    subject_id = models.CharField(max_length=64, blank=True, help_text="The crew run, conversation or message.")
    user = models.ForeignKey("accounts.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    api_key = models.ForeignKey("accounts.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    request_id = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OK)
    error_class = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    # Totals over the trace's model calls (the ledger rows hold the same figures, one per call).
    llm_calls = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=Decimal(0))

    class Meta(OrgOwnedModel.Meta):
        indexes: ClassVar = [
            models.Index(fields=["organization", "-started_at"], name="llm_trace_org_time"),
            models.Index(fields=["organization", "subject_id"], name="llm_trace_subject",
                         condition=~models.Q(subject_id="")),
        ]  # fmt: skip


class Span(OrgOwnedModel):
    class Kind(models.TextChoices):
        STEP = "step", "Step"
        RETRIEVAL = "retrieval", "Retrieval"
        LLM = "llm", "Model call"
        TOOL = "tool", "Tool call"

    trace = models.ForeignKey(Trace, on_delete=models.CASCADE, related_name="spans")
    seq = models.PositiveIntegerField()
    parent_seq = models.PositiveIntegerField(null=True, blank=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    name = models.CharField(max_length=200)
    start_ms = models.PositiveIntegerField(default=0, help_text="From the trace's start.")
    end_ms = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=10, default="ok")
    llm_call_id = models.UUIDField(null=True, blank=True, help_text="The ledger row of a model call.")
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=Decimal(0))
    attributes = models.JSONField(default=dict, blank=True)

    class Meta(OrgOwnedModel.Meta):
        constraints: ClassVar = [models.UniqueConstraint(fields=["trace", "seq"], name="llm_span_trace_seq")]
        indexes: ClassVar = [
            models.Index(fields=["organization", "llm_call_id"], name="llm_span_call",
                         condition=models.Q(llm_call_id__isnull=False)),
        ]  # fmt: skip

    @property
    def latency_ms(self) -> int:
        return max(0, self.end_ms - self.start_ms)
