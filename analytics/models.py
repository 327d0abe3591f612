"""The dashboards' per-hour aggregates of the ledger (analytics/rollups.py writes them, analytics/insights.py
reads them): a page over 30 days reads a few hundred rows, never the raw ledger."""

from decimal import Decimal
from typing import ClassVar

from django.contrib.postgres.fields import ArrayField
from django.db import models

from saas.core.tenancy import OrgOwnedModel

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


class HourlyRollup(OrgOwnedModel):
    """One org's ledger for one UTC hour, one feature and one model: counts, sums and histograms, so that any
    range adds rows up. Feedback counts in the hour it was given (its call's feature and model)."""

    hour = models.DateTimeField(help_text="The start of the UTC hour.")
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
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["organization", "hour", "feature", "model"], name="analytics_rollup_key"),
        ]


class RollupState(OrgOwnedModel):
    """How far an org's ledger is rolled up: the hours before `rolled_until` are in HourlyRollup; the dashboard
    reads the hours from there on (the open hour, or more when the beat was down) from the ledger itself."""

    rolled_until = models.DateTimeField()

    class Meta(OrgOwnedModel.Meta):
        constraints: ClassVar = [models.UniqueConstraint(fields=["organization"], name="analytics_rollupstate_one")]
