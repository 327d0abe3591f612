"""Reads of the gateway's ledger for the team's pages."""

from typing import Any

from saas.llm.models import LLMCall

REQUEST_LOG_ROWS = 200


def llm_call_list(*, org: Any, status: str | None = None, guarded: bool = False) -> list[LLMCall]:
    """The org's most recent calls, newest first: by status, or only those the guardrails flagged or blocked."""
    calls = LLMCall.objects.for_org(org).select_related("user", "api_key").defer("input_encrypted", "output_encrypted")
    if status:
        calls = calls.filter(status=status)
    if guarded:
        calls = calls.exclude(guardrails=[])
    return list(calls.order_by("-created_at")[:REQUEST_LOG_ROWS])
