from decimal import Decimal
from typing import Any, ClassVar

from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.db import models

from saas.core.models import BaseModel
from saas.core.tenancy import OrgOwnedModel


def validate_rate_limit(value: str) -> None:
    from limits import parse

    try:
        parse(value)
    except ValueError as error:
        raise ValidationError(f"Not a rate limit: {value!r} (write it as 600/minute or 10 per second).") from error


ENDPOINT_RATE_PER = ("org", "key")


def validate_endpoint_rate_limits(value: Any) -> None:
    """{"ask": {"org": "2000/minute", "key": "300/minute"}, ...}: endpoints of settings.ENDPOINT_RATE_LIMITS,
    each with a rate per org and/or per key (or member); what a plan leaves out takes the server's rate."""
    from django.conf import settings

    endpoints = sorted(settings.ENDPOINT_RATE_LIMITS)
    if not isinstance(value, dict):
        raise ValidationError('Write it as {"ask": {"org": "2000/minute", "key": "300/minute"}}.')
    for endpoint, rates in value.items():
        if endpoint not in endpoints:
            raise ValidationError(f"Unknown endpoint {endpoint!r}: one of {', '.join(endpoints)}.")
        if not isinstance(rates, dict) or not set(rates) <= set(ENDPOINT_RATE_PER):
            raise ValidationError(f'{endpoint}: give "org" and/or "key" rates, e.g. {{"org": "2000/minute"}}.')
        for rate in rates.values():
            if not isinstance(rate, str):
                raise ValidationError(f"{endpoint}: a rate is text, e.g. 300/minute.")
            validate_rate_limit(rate)


class Plan(BaseModel):
    """What an org buys: a row of the plan catalogue (seeded by a migration, edited in the admin)."""

    slug = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=80)
    monthly_price_usd = models.DecimalField(max_digits=10, decimal_places=2, default=Decimal(0))
    included_requests = models.PositiveIntegerField(help_text="AI requests included per billing period.")
    hard_cap = models.BooleanField(default=True, help_text="Stop at the allowance (else: overage, up to the "
                                                           "org's spend cap).")  # fmt: skip
    price_per_extra_request = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    price_per_cache_hit = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    members_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: no limit.")
    storage_limit_mb = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: no limit.")
    allowed_models = ArrayField(models.SlugField(max_length=64), default=list, blank=True,
                                help_text="Chat models of this plan; empty: every model the org allows.")  # fmt: skip
    api_rate_limit = models.CharField(max_length=40, blank=True, validators=[validate_rate_limit],
                                      help_text="API requests per org, e.g. 10000/minute; empty: the server's "
                                                "RATE_LIMIT_ORG.")  # fmt: skip
    endpoint_rate_limits = models.JSONField(
        default=dict, blank=True, validators=[validate_endpoint_rate_limits],
        help_text='Rates of the endpoints with buckets of their own (ask, generate, chat_completions, embeddings, '
        'upload), per org and per key, e.g. {"ask": {"org": "3000/minute", "key": "600/minute"}}; an endpoint or '
        "rate left out takes the server's (ENDPOINT_RATE_LIMITS).",
    )  # fmt: skip
    stripe_price_id = models.CharField(max_length=100, blank=True)
    stripe_metered_price_id = models.CharField(max_length=100, blank=True)
    is_default = models.BooleanField(default=False, help_text="The plan of an org without a subscription.")
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering: ClassVar = ["position"]
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["is_default"], condition=models.Q(is_default=True),
                                    name="billing_one_default_plan"),
        ]  # fmt: skip

    def __str__(self) -> str:
        return self.name


class OrgBilling(OrgOwnedModel):
    """An org's plan and subscription state (a row per org; without one, the default plan applies)."""

    class Status(models.TextChoices):
        FREE = "free", "Free"
        TRIALING = "trialing", "Trialing"
        ACTIVE = "active", "Active"
        PAST_DUE = "past_due", "Past due"
        CANCELED = "canceled", "Canceled"

    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.FREE)
    spend_cap_usd = models.DecimalField(max_digits=10, decimal_places=2, null=True, blank=True,
                                        help_text="The most overage a period may cost; empty: no cap.")  # fmt: skip
    current_period_start = models.DateTimeField(null=True, blank=True)
    current_period_end = models.DateTimeField(null=True, blank=True)
    stripe_customer_id = models.CharField(max_length=100, blank=True)
    stripe_subscription_id = models.CharField(max_length=100, blank=True)
    past_due_since = models.DateTimeField(null=True, blank=True)

    class Meta(OrgOwnedModel.Meta):
        constraints: ClassVar = [models.UniqueConstraint(fields=["organization"], name="billing_one_per_org")]


class UsageEvent(OrgOwnedModel):
    """The usage ledger: one row per billable event, linked to the gateway's ledger row, in its period."""

    class Kind(models.TextChoices):
        REQUEST = "request", "AI request"
        CACHE_HIT = "cache_hit", "Cache hit"

    llm_call = models.OneToOneField("llm.LLMCall", null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")  # fmt: skip
    kind = models.CharField(max_length=10, choices=Kind.choices)
    feature = models.CharField(max_length=16)
    model = models.CharField(max_length=64, blank=True)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=Decimal(0),
                                   help_text="The model's cost, from the gateway's ledger.")  # fmt: skip
    period_start = models.DateTimeField()

    class Meta(OrgOwnedModel.Meta):
        indexes: ClassVar = [
            models.Index(fields=["organization", "period_start", "kind"], name="billing_usage_period"),
        ]


class UsageReport(OrgOwnedModel):
    """Overage reported to Stripe's billing meter for one org and period: what Stripe has counted, and the one
    report in flight. The report is written here before it is sent, so a retry after a crash resends the same
    identifier and Stripe counts it once."""

    period_start = models.DateTimeField()
    reported_requests = models.PositiveIntegerField(default=0)
    pending_requests = models.PositiveIntegerField(default=0)
    pending_identifier = models.CharField(max_length=120, blank=True)
    pending_at = models.DateTimeField(null=True, blank=True, help_text="The last request the pending report counts.")
    last_reported_at = models.DateTimeField(null=True, blank=True)

    class Meta(OrgOwnedModel.Meta):
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["organization", "period_start"], name="billing_one_report_per_period"),
        ]
