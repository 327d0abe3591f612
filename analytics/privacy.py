"""Analytics' share of exports and erasure (saas/core/privacy.py): the dashboards' hourly rollups hold counts,
sums and histograms per org, hour, feature and model: nobody's words and no person (a member's erasure leaves
them as they are). Erasing the org deletes them."""

from typing import Any

from django.db import transaction

from analytics.models import HourlyRollup, RollupState
from saas.core.privacy import Store


def rollups_erase_org(*, org_id: Any, batch_size: int) -> int:
    with transaction.atomic():
        batch = list(HourlyRollup.objects.for_org(org_id).values_list("pk", flat=True)[:batch_size])
        erased = HourlyRollup.objects.for_org(org_id).filter(pk__in=batch).delete()[0]
        if not erased:
            erased = RollupState.objects.for_org(org_id).delete()[0]
        return erased


ROLLUPS = Store(
    name="insights",
    title="Dashboard figures",
    what="Per hour, feature and model: how many AI requests, errors, tokens, cost, latency, cache hits, feedback "
    "and groundedness (numbers only: no prompts, answers or people)",
    where="PostgreSQL",
    kept="As long as the team exists",
    erase_org=rollups_erase_org,
)
