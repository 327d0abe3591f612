from decimal import Decimal
from typing import ClassVar

from django.contrib.postgres.fields import ArrayField
from django.db import models
from pgvector.django import HnswIndex, VectorField

from saas.core.models import BaseModel
from saas.core.tenancy import OrgOwnedModel
from saas.llm.prompt_models import Experiment, ExperimentVariant, Prompt, PromptVersion
from saas.llm.provider_models import OrgProvider, Provider, ProviderKind
from saas.llm.trace_models import Span, Trace

__all__ = [
    "Experiment", "ExperimentVariant", "LLMCall", "ModelConfig", "OrgLLMSettings", "OrgProvider", "Prompt",
    "PromptVersion", "Provider", "ProviderKind", "SemanticCacheEntry", "Span", "Trace",
]  # fmt: skip


class ModelConfig(BaseModel):
    """One entry of the model registry: seeded from saas/llm/registry.yaml, editable in the admin."""

    class Tier(models.TextChoices):
        SMALL = "small", "Small"
        LARGE = "large", "Large"

    class Kind(models.TextChoices):
        CHAT = "chat", "Chat"
        EMBEDDING = "embedding", "Embedding"

    alias = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.CHAT)
    upstream = models.CharField(
        max_length=32, help_text="The provider (llm.Provider, or an upstream of LLM_UPSTREAMS), e.g. openai."
    )
    upstream_model = models.CharField(max_length=128)
    input_price_per_mtok = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    output_price_per_mtok = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    context_window = models.PositiveIntegerField(default=8192)
    tier = models.CharField(max_length=8, choices=Tier.choices, default=Tier.SMALL)
    supports_tools = models.BooleanField(default=False)
    supports_json = models.BooleanField(default=False)
    supports_vision = models.BooleanField(default=False)
    streaming_usage = models.BooleanField(default=True, help_text="The provider reports usage at a stream's end.")
    fallbacks = ArrayField(
        models.SlugField(max_length=64),
        default=list,
        blank=True,
        help_text="Aliases tried, in order, when this model fails with a retryable error.",
    )
    enabled = models.BooleanField(default=True)

    def __str__(self) -> str:
        return self.alias


class OrgLLMSettings(OrgOwnedModel):
    """Per-org AI options (a row per org; defaults apply when it is missing)."""

    class PiiPolicy(models.TextChoices):
        OFF = "off", "Off"
        MASK = "mask", "Mask before sending"
        BLOCK = "block", "Refuse requests containing personal data"

    allowed_models = ArrayField(models.SlugField(max_length=64), default=list, blank=True,
                                help_text="Empty: every enabled model.")  # fmt: skip
    default_model = models.SlugField(max_length=64, default="auto")
    pii_policy = models.CharField(max_length=8, choices=PiiPolicy.choices, default=PiiPolicy.MASK)
    pii_phone_regions = ArrayField(
        models.CharField(max_length=3), default=list, blank=True,
        help_text="Regions (ISO 3166 codes, tried in order) whose national phone formats are recognised; empty: "
        "the server's LLM_PII_PHONE_REGIONS.",
    )  # fmt: skip
    pii_mask_names = models.BooleanField(
        default=False, help_text="Also mask person names that a cue announces (Mr, Dr, my name is, Dear, ...)."
    )

    class Guard(models.TextChoices):
        OFF = "off", "Off"
        FLAG = "flag", "Flag in the request log"
        BLOCK = "block", "Refuse"

    # Guardrails (saas/llm/guardrails.py). Flagged retrieved passages and tool results are always quoted as data.
    injection_guard = models.CharField(max_length=8, choices=Guard.choices, default=Guard.FLAG)
    moderation_guard = models.CharField(max_length=8, choices=Guard.choices, default=Guard.FLAG)
    denied_keywords = ArrayField(models.CharField(max_length=100), default=list, blank=True,
                                 help_text="Requests and answers with one of these words are refused.")  # fmt: skip
    denied_topics = ArrayField(models.CharField(max_length=200), default=list, blank=True,
                               help_text="Requests about one of these topics (by meaning) are refused.")  # fmt: skip

    class PromptVisibility(models.TextChoices):
        ADMINS = "admins", "Admins and owners"
        OWNERS = "owners", "Owners only"
        NOBODY = "nobody", "Nobody"

    # Who may read the masked prompt and answer of a call in the request log (saas/llm/api_requests.py); only
    # owners change it, so that an admin cannot widen it for themselves.
    prompt_visibility = models.CharField(
        max_length=8, choices=PromptVisibility.choices, default=PromptVisibility.ADMINS,
        help_text="Who may read the stored (masked) prompts and answers in the request log.",
    )  # fmt: skip

    class Meta(OrgOwnedModel.Meta):
        constraints: ClassVar = [models.UniqueConstraint(fields=["organization"], name="llm_orgsettings_one_per_org")]


class LLMCall(OrgOwnedModel):
    """The ledger: one row per gateway request, cache hits and failures included. Every attempt (retries,
    fallbacks) is listed in `attempts` with its own status. Prompts and answers are stored masked and
    encrypted (saas.core.crypto)."""

    class Status(models.TextChoices):
        OK = "ok", "OK"
        ERROR = "error", "Error"
        CANCELLED = "cancelled", "Cancelled"
        BLOCKED = "blocked", "Blocked by guardrails"

    class Cache(models.TextChoices):
        MISS = "miss", "Miss"
        EXACT = "exact", "Exact hit"
        SEMANTIC = "semantic", "Semantic hit"
        BYPASS = "bypass", "Bypassed"

    user = models.ForeignKey("accounts.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    api_key = models.ForeignKey("accounts.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    request_id = models.CharField(max_length=64, blank=True)
    trace_id = models.CharField(max_length=64, blank=True, help_text="The job the call belongs to (a crew run).")
    feature = models.CharField(max_length=16, default="chat")
    model_requested = models.CharField(max_length=64)
    model_used = models.CharField(max_length=64, blank=True)
    upstream = models.CharField(max_length=32, blank=True)
    stream = models.BooleanField(default=False)
    attempts = models.JSONField(default=list)
    fallbacks_taken = models.PositiveSmallIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    tokens_estimated = models.BooleanField(default=False)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=Decimal(0))
    cost_saved_usd = models.DecimalField(max_digits=14, decimal_places=8, default=Decimal(0))
    latency_ms = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    cache = models.CharField(max_length=10, choices=Cache.choices, default=Cache.MISS)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OK)
    error_class = models.CharField(max_length=32, blank=True)
    pii_masked = models.PositiveSmallIntegerField(default=0)
    guardrails = models.JSONField(default=list, blank=True, help_text="The guardrails' findings (flagged or blocked).")
    # Written once documents' ask has checked the answer, right after the row; None for every other call.
    groundedness = models.FloatField(
        null=True, blank=True, help_text="A grounded answer's share of supported sentences (documents.ask), 0 to 1."
    )
    input_encrypted = models.TextField(blank=True)
    output_encrypted = models.TextField(blank=True)
    # The managed system prompt the call was made with (saas/llm/prompts.py), and the experiment arm that chose
    # it. No database constraint: the ledger is append-only and large, a version is never deleted while its
    # org lives, and an erased org's rows go with it.
    prompt_version = models.ForeignKey("llm.PromptVersion", null=True, blank=True, on_delete=models.DO_NOTHING,
                                       db_constraint=False, db_index=False, related_name="+")  # fmt: skip
    experiment_variant = models.ForeignKey("llm.ExperimentVariant", null=True, blank=True,
                                           on_delete=models.DO_NOTHING, db_constraint=False, db_index=False,
                                           related_name="+")  # fmt: skip

    class Meta(OrgOwnedModel.Meta):
        indexes: ClassVar = [
            models.Index(fields=["organization", "-created_at"], name="llm_call_org_time"),
            models.Index(fields=["experiment_variant", "created_at"], name="llm_call_variant",
                         condition=models.Q(experiment_variant__isnull=False)),
            models.Index(fields=["organization", "trace_id"], name="llm_call_trace",
                         condition=~models.Q(trace_id="")),
            # The dashboards' "top failing questions" read the latest failures of a range, and only those.
            models.Index(fields=["organization", "-created_at"], name="llm_call_failing",
                         condition=models.Q(status="error") | models.Q(groundedness__lt=0.5)),
        ]  # fmt: skip


class SemanticCacheEntry(OrgOwnedModel):
    """A single-turn question and its answer, found again by meaning (pgvector, cosine), within one org, one
    model, one prompt version and one knowledge-base version (a re-indexed collection never serves old
    answers), over the passages it cites (saas/llm/caches.py)."""

    model_alias = models.CharField(max_length=64)
    prompt_version = models.CharField(max_length=64)  # the PromptVersion's id (or LLM_PROMPT_VERSION without one)
    scope = models.CharField(max_length=128, help_text="The knowledge-base version the answer was built on.")
    embedding = VectorField(dimensions=384)
    answer_encrypted = models.TextField()
    # The passages the answer was written over (as numbered in its prompt: [1] is the first) and those it
    # cites: an entry answers a new question only when the new retrieval returns every passage it cites.
    source_chunk_ids = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    cited_chunk_ids = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField(db_index=True)

    class Meta(OrgOwnedModel.Meta):
        indexes: ClassVar = [
            HnswIndex(name="llm_semcache_hnsw", fields=["embedding"], m=16, ef_construction=64,
                      opclasses=["vector_cosine_ops"]),
            models.Index(fields=["organization", "model_alias", "scope"], name="llm_semcache_scope"),
        ]  # fmt: skip
