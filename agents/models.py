from typing import ClassVar

from django.contrib.postgres.fields import ArrayField
from django.db import models

from saas.core.crypto import encrypted_json, encrypted_text
from saas.core.tenancy import OrgOwnedModel


class Conversation(OrgOwnedModel):
    """A chat of one member with the gateway, private to them within the org. Its title (the start of the first
    question, then a summary of the first exchange, or what its member renamed it) is encrypted at rest like
    the messages."""

    class TitleSource(models.TextChoices):
        QUESTION = "question", "the first question"
        SUMMARY = "summary", "summarised from the first exchange"
        USER = "user", "renamed by its member"

    user = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="+")
    title_encrypted = models.TextField(blank=True)
    # Where the title came from: a summary never replaces a title its member chose (agents/conversations.py).
    title_source = models.CharField(max_length=8, choices=TitleSource.choices, default=TitleSource.QUESTION)
    model = models.CharField(max_length=64, default="auto")
    # The team's knowledge the answers draw on (agents/conversations.py): none is a plain chat with the model.
    collections = models.ManyToManyField("documents.Collection", blank=True, related_name="+")
    pinned = models.BooleanField(default=False)

    class Meta(OrgOwnedModel.Meta):
        indexes: ClassVar = [models.Index(fields=["organization", "user", "-updated_at"], name="agents_conv_user")]

    title = encrypted_text("title_encrypted")

    def __str__(self) -> str:
        return self.title or "New conversation"


class Message(OrgOwnedModel):
    """One turn. The text is encrypted at rest (saas.core.crypto), like the ledger's, and so is the error (a
    provider's refusal can quote the request)."""

    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"

    class Status(models.TextChoices):
        STREAMING = "streaming", "Streaming"
        COMPLETE = "complete", "Complete"
        CANCELLED = "cancelled", "Stopped"
        ERROR = "error", "Failed"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=10, choices=Role.choices)
    content_encrypted = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.COMPLETE)
    model = models.CharField(max_length=64, blank=True)
    engine = models.CharField(max_length=32, blank=True)
    error_encrypted = models.TextField(blank=True)  # at most 500 characters of plaintext
    # The passages a grounded answer cites (quotes of the team's documents: encrypted like them).
    citations_encrypted = models.TextField(blank=True)
    # The answer's ledger row. Its id is known when the answer ends, the row itself lands moments later from the
    # ledger stream (saas/llm/ledger.py): no database constraint (deleting a row still sets this to NULL).
    llm_call = models.ForeignKey("llm.LLMCall", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                 db_constraint=False)  # fmt: skip

    class Meta(OrgOwnedModel.Meta):
        ordering: ClassVar = ["created_at"]

    error = encrypted_text("error_encrypted")
    citations = encrypted_json("citations_encrypted", list)


class Feedback(OrgOwnedModel):
    """Thumbs up or down, with an optional comment, on an assistant message of a chat or on any other answer
    of the gateway (an ask response, by its ledger row); one per person and answer. The comment is the person's
    words: encrypted at rest."""

    class Rating(models.IntegerChoices):
        DOWN = -1, "Thumbs down"
        UP = 1, "Thumbs up"

    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.CASCADE, related_name="feedback")
    llm_call = models.ForeignKey("llm.LLMCall", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey("accounts.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    api_key = models.ForeignKey("accounts.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    rating = models.SmallIntegerField(choices=Rating.choices)
    comment_encrypted = models.TextField(blank=True)  # at most 2,000 characters of plaintext (agents.services)

    class Meta(OrgOwnedModel.Meta):
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["message", "user"], name="agents_feedback_one_per_user",
                                    condition=models.Q(user__isnull=False)),
            models.UniqueConstraint(fields=["llm_call", "user"], name="agents_feedback_one_per_user_call",
                                    condition=models.Q(user__isnull=False)),
            models.CheckConstraint(
                condition=models.Q(message__isnull=False, llm_call__isnull=True)
                | models.Q(message__isnull=True, llm_call__isnull=False),
                name="agents_feedback_on_one_answer",
            ),
        ]  # fmt: skip

    comment = encrypted_text("comment_encrypted")


# --- Crews -------------------------------------------------------------------------------------------------


class Crew(OrgOwnedModel):
    """A team of agents and the tasks they work through, run as a background job (agents/engine.py). Its
    definition is configuration an admin types and stays readable; the inputs of its scheduled runs are the same
    kind of content as a run's inputs and are encrypted at rest."""

    class Process(models.TextChoices):
        SEQUENTIAL = "sequential", "Sequential"
        HIERARCHICAL = "hierarchical", "Hierarchical (a manager delegates and reviews)"

    name = models.CharField(max_length=120)
    description = models.TextField(blank=True, max_length=2000)
    process = models.CharField(max_length=12, choices=Process.choices, default=Process.SEQUENTIAL)
    default_model = models.SlugField(max_length=64, default="auto")
    budget_usd = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="A run stops (failed, budget exceeded) when its cost reaches this.",
    )
    template = models.SlugField(max_length=40, blank=True, help_text="The ready-made crew it was made from.")
    created_by = models.ForeignKey("accounts.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    schedule_cron = models.CharField(max_length=120, blank=True, help_text="Five-field cron, in UTC.")
    schedule_inputs_encrypted = models.TextField(blank=True)  # a JSON object (saas.core.crypto)
    schedule_enabled = models.BooleanField(default=False)
    next_run_at = models.DateTimeField(null=True, blank=True)

    class Meta(OrgOwnedModel.Meta):
        indexes: ClassVar = [
            models.Index(fields=["next_run_at"], name="agents_crew_due", condition=models.Q(schedule_enabled=True)),
        ]

    schedule_inputs = encrypted_json("schedule_inputs_encrypted")

    def __str__(self) -> str:
        return self.name


class Agent(OrgOwnedModel):
    crew = models.ForeignKey(Crew, on_delete=models.CASCADE, related_name="agents")
    role = models.CharField(max_length=64)
    goal = models.TextField(max_length=2000)
    instructions = models.TextField(blank=True, max_length=8000)
    model = models.SlugField(max_length=64, blank=True, help_text="Empty: the crew's default model.")
    tools = ArrayField(models.SlugField(max_length=40), default=list, blank=True)
    max_iterations = models.PositiveSmallIntegerField(default=5)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta(OrgOwnedModel.Meta):
        ordering: ClassVar = ["position"]
        constraints: ClassVar = [models.UniqueConstraint(fields=["crew", "role"], name="agents_agent_role_unique")]


class Task(OrgOwnedModel):
    class OutputFormat(models.TextChoices):
        TEXT = "text", "Text"
        JSON = "json", "JSON"

    crew = models.ForeignKey(Crew, on_delete=models.CASCADE, related_name="tasks")
    name = models.SlugField(max_length=64)
    description = models.TextField(max_length=8000)
    expected_output = models.TextField(blank=True, max_length=2000)
    agent = models.ForeignKey(
        Agent,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="tasks",
        help_text="Empty in a hierarchical crew: the manager chooses.",
    )
    position = models.PositiveSmallIntegerField(default=0)
    context = ArrayField(
        models.SlugField(max_length=64),
        default=list,
        blank=True,
        help_text="Names of earlier tasks whose outputs this task receives.",
    )
    output_format = models.CharField(max_length=4, choices=OutputFormat.choices, default=OutputFormat.TEXT)
    output_schema = models.JSONField(null=True, blank=True)

    class Meta(OrgOwnedModel.Meta):
        ordering: ClassVar = ["position"]
        constraints: ClassVar = [models.UniqueConstraint(fields=["crew", "name"], name="agents_task_name_unique")]


class Run(OrgOwnedModel):
    """One execution of a crew. `definition` is the crew as it was when the run was started: editing the crew
    changes later runs, never one in flight (it leaves out the schedule). The inputs, the output and the error
    (which can quote a model's output or an upstream message) are encrypted at rest."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Trigger(models.TextChoices):
        MANUAL = "manual", "Started by hand"
        SCHEDULE = "schedule", "Schedule"

    FINISHED: ClassVar = {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED}

    crew = models.ForeignKey(Crew, on_delete=models.CASCADE, related_name="runs")
    definition = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    trigger = models.CharField(max_length=10, choices=Trigger.choices, default=Trigger.MANUAL)
    inputs_encrypted = models.TextField(blank=True)  # a JSON object of strings (saas.core.crypto)
    output_encrypted = models.TextField(blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    error_encrypted = models.TextField(blank=True)  # at most 1,000 characters of plaintext
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    started_by = models.ForeignKey("accounts.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    api_key = models.ForeignKey("accounts.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    idempotency_key = models.CharField(max_length=255, blank=True)
    request_hash = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    lease = models.UUIDField(null=True, blank=True, help_text="Which delivery of the task owns the run.")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta(OrgOwnedModel.Meta):
        indexes: ClassVar = [
            models.Index(fields=["organization", "-created_at"], name="agents_run_org_time"),
            models.Index(fields=["crew", "-created_at"], name="agents_run_crew_time"),
            models.Index(fields=["heartbeat_at"], name="agents_run_running", condition=models.Q(status="running")),
        ]
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["organization", "idempotency_key"], name="agents_run_idempotency",
                                    condition=~models.Q(idempotency_key="")),
        ]  # fmt: skip

    inputs = encrypted_json("inputs_encrypted")
    error = encrypted_text("error_encrypted")


class RunStep(OrgOwnedModel):
    """One thing that happened in a run, in order: a plan or review of the manager, a model's message, a tool
    call and its result, a task's output. A step that cost something points at its ledger row. Its content and
    its data (citations quote documents' titles and headings, errors quote a model's output) are encrypted."""

    class Kind(models.TextChoices):
        PLAN = "plan", "Plan"
        MESSAGE = "message", "Message"
        TOOL_CALL = "tool_call", "Tool call"
        TOOL_RESULT = "tool_result", "Tool result"
        OUTPUT = "output", "Output"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    seq = models.PositiveIntegerField()
    attempt = models.PositiveSmallIntegerField(default=1)
    agent_role = models.CharField(max_length=64, blank=True)
    task_name = models.CharField(max_length=64, blank=True)
    kind = models.CharField(max_length=12, choices=Kind.choices)
    content_encrypted = models.TextField(blank=True)
    data_encrypted = models.TextField(blank=True)  # a JSON object (saas.core.crypto)
    llm_call = models.ForeignKey("llm.LLMCall", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    latency_ms = models.PositiveIntegerField(default=0)

    class Meta(OrgOwnedModel.Meta):
        ordering: ClassVar = ["seq"]
        constraints: ClassVar = [models.UniqueConstraint(fields=["run", "seq"], name="agents_step_seq_unique")]

    data = encrypted_json("data_encrypted")
