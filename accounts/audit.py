"""The audit log as people read it: action names in words, and the CSV export of a filtered view.

A CSV opened in a spreadsheet runs any cell that starts with a formula character (OWASP "CSV injection"): a
target named `=HYPERLINK(...)` or an actor label chosen by whoever typed it must stay text. Such cells are
prefixed with an apostrophe, which spreadsheets show as nothing and read as "this is text".
"""

import csv
import io
from collections.abc import Iterable, Iterator
from typing import Any

from accounts.models import AuditEvent

ACTION_LABELS = {
    "api_key.created": "API key created",
    "api_key.ip_denied": "API key refused from a network it is not allowed on",
    "api_key.many_networks": "API key used from many networks",
    "api_key.networks_changed": "API key networks changed",
    "api_key.revoked": "API key revoked",
    "api_key.rotated": "API key rotated",
    "billing.checkout_started": "Checkout started",
    "billing.spend_cap_set": "Spend cap changed",
    "billing.subscription_changed": "Subscription changed",
    "crew.create": "Crew created",
    "eval.gate_passed": "Regression gate passed (eval_gate)",
    "eval.gate_refused": "Regression gate refused a prompt version (eval_gate)",
    "crew.delete": "Crew deleted",
    "crew.update": "Crew changed",
    "invitation.accepted": "Invitation accepted",
    "invitation.created": "Invitation sent",
    "invitation.revoked": "Invitation withdrawn",
    "member.left": "Member left",
    "member.removed": "Member removed",
    "member.role_changed": "Member's role changed",
    "org.created": "Team created",
    "org.export_downloaded": "Team export downloaded",
    "org.export_requested": "Team export requested",
    "org.guardrails_changed": "Guardrails changed",
    "org.member_content_policy_changed": "Departing members' content policy changed",
    "org.ownership_transferred": "Ownership transferred",
    "org.pii_policy_changed": "Personal-data policy changed",
    "org.prompt_visibility_changed": "Prompt visibility changed",
    "org.retention_changed": "Retention changed",
    "org.settings_changed": "Team settings changed",
    "llm.provider_created": "Model provider connected",
    "llm.provider_updated": "Model provider changed",
    "llm.provider_deleted": "Model provider removed",
    "llm.provider_models_changed": "Model provider's models changed",
    "user.erasure_requested": "Account deletion requested",
    "user.export_downloaded": "Personal export downloaded",
    "user.export_requested": "Personal export requested",
    "user.sign_in_failed": "Sign-in failed",
    "user.signed_in": "Signed in",
}
_WORDS = {"api": "API", "key": "key", "org": "team", "pii": "personal data", "mfa": "two-factor"}


def action_label(action: str) -> str:
    """`api_key.rotated` -> "API key rotated"; an action without a label is spelled out from its name."""
    if action in ACTION_LABELS:
        return ACTION_LABELS[action]
    words = [_WORDS.get(word, word) for word in action.replace(".", " ").replace("_", " ").split()]
    text = " ".join(words)
    return text[:1].upper() + text[1:] if text else action


def action_choices(actions: Iterable[str]) -> list[tuple[str, str]]:
    """(action, label) for a filter's options, sorted by label."""
    return sorted(((action, action_label(action)) for action in actions), key=lambda pair: pair[1].lower())


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


CSV_HEADER = ["time_utc", "action", "action_name", "actor", "target_type", "target", "ip", "request_id"]


def _row(event: AuditEvent) -> list[str]:
    return [csv_cell(value) for value in (
        event.created_at.strftime("%Y-%m-%d %H:%M:%S"), event.action, action_label(event.action), event.actor_label,
        event.target_type, event.target_label, event.ip or "", event.request_id,
    )]  # fmt: skip


def audit_csv_lines(events: Iterable[AuditEvent]) -> Iterator[str]:
    """The CSV, a line at a time (for a streaming response): a header, then one row per event."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in [CSV_HEADER]:
        writer.writerow(row)
    yield buffer.getvalue()
    for event in events:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(_row(event))
        yield buffer.getvalue()
