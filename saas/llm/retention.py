"""The ledger's share of retention: past the org's `retain_ledger_content_days`, a call's prompt and answer are
blanked; the row itself (model, tokens, cost, status) stays, because billing and security need it."""

from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Q

from saas.llm.models import LLMCall, Span, Trace


@transaction.atomic
def ledger_content_purge(*, org_id: Any, older_than: datetime, batch_size: int) -> int:
    with_content = LLMCall.objects.for_org(org_id).filter(created_at__lt=older_than).filter(
        ~Q(input_encrypted="") | ~Q(output_encrypted=""))  # fmt: skip
    batch = list(with_content.order_by("created_at").values_list("pk", flat=True)[:batch_size])
    return LLMCall.objects.for_org(org_id).filter(pk__in=batch).update(input_encrypted="", output_encrypted="")


@transaction.atomic
def traces_purge(*, org_id: Any, older_than: datetime, batch_size: int) -> int:
    """Traces go with the ledger's content (their spans point at its rows and at the passages retrieved)."""
    batch = list(Trace.objects.for_org(org_id).filter(started_at__lt=older_than).order_by("started_at")
                 .values_list("pk", flat=True)[:batch_size])  # fmt: skip
    Span.objects.for_org(org_id).filter(trace_id__in=batch).delete()
    return Trace.objects.for_org(org_id).filter(pk__in=batch).delete()[0] if batch else 0
