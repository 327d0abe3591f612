from typing import ClassVar

from django.db import models

from saas.core.tenancy import OrgOwnedModel


class Conversation(OrgOwnedModel):
    """A chat of one member with the gateway, private to them within the org."""

    user = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="+")
    title = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=64, default="auto")

    class Meta(OrgOwnedModel.Meta):
        indexes: ClassVar = [models.Index(fields=["organization", "user", "-updated_at"], name="agents_conv_user")]

    def __str__(self) -> str:
        return self.title or "New conversation"


class Message(OrgOwnedModel):
    """One turn. The text is encrypted at rest (saas.llm.crypto), like the ledger's."""

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
    error = models.CharField(max_length=500, blank=True)
    llm_call = models.ForeignKey("llm.LLMCall", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta(OrgOwnedModel.Meta):
        ordering: ClassVar = ["created_at"]


class Feedback(OrgOwnedModel):
    """Thumbs up or down, with an optional comment, on an assistant message of a chat or on any other answer
    of the gateway (an ask response, by its ledger row); one per person and answer."""

    class Rating(models.IntegerChoices):
        DOWN = -1, "Thumbs down"
        UP = 1, "Thumbs up"

    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.CASCADE, related_name="feedback")
    llm_call = models.ForeignKey("llm.LLMCall", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey("accounts.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    api_key = models.ForeignKey("accounts.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    rating = models.SmallIntegerField(choices=Rating.choices)
    comment = models.TextField(blank=True, max_length=2000)

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
