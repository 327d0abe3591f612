"""Writes for the gateway's per-org settings."""

from typing import Any

from django.db import transaction

from accounts.permissions import ADMIN
from accounts.services import Origin, audit_record
from saas.core.errors import ApplicationError
from saas.llm.models import OrgLLMSettings


@transaction.atomic
def pii_policy_set(*, principal: Any, policy: str, origin: Origin | None = None) -> OrgLLMSettings:
    """How the gateway treats personal data in the org's prompts: mask it, refuse the request, or send as is."""
    principal.require(ADMIN)
    if policy not in OrgLLMSettings.PiiPolicy.values:
        raise ApplicationError(f"The policy is one of: {', '.join(OrgLLMSettings.PiiPolicy.values)}.", code="invalid",
                               details={"fields": {"pii_policy": ["Choose mask, block or off."]}})  # fmt: skip
    org = principal.organization
    row, _ = OrgLLMSettings.objects.for_org(org).select_for_update().get_or_create(organization=org)
    if row.pii_policy != policy:
        change = {"from": row.pii_policy, "to": policy}
        row.pii_policy = policy
        row.save(update_fields=["pii_policy", "updated_at"])  # the config memo reloads in every process
        audit_record(org=org, action="org.pii_policy_changed", principal=principal, target=org, origin=origin,
                     metadata=change)  # fmt: skip
    return row


MAX_DENIED_KEYWORDS, MAX_DENIED_TOPICS = 100, 20


def _phrases(values: Any, *, field: str, limit: int, max_length: int) -> list[str]:
    """A deny list as admins type it: one phrase per entry, trimmed, duplicates dropped, order kept."""
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ApplicationError(f"`{field}` is a list of strings.", code="invalid",
                               details={"fields": {field: ["Give a list of strings."]}})  # fmt: skip
    phrases = list(dict.fromkeys(" ".join(v.split()) for v in values if v.strip()))
    problem = None
    if len(phrases) > limit:
        problem = f"At most {limit} entries."
    elif any(len(p) > max_length for p in phrases):
        problem = f"Each entry is at most {max_length} characters."
    elif any(not c.isprintable() for p in phrases for c in p):
        problem = "Entries cannot contain control characters."
    if problem:
        raise ApplicationError(problem, code="invalid", details={"fields": {field: [problem]}})
    return phrases


@transaction.atomic
def guardrails_set(*, principal: Any, changes: dict[str, Any], origin: Origin | None = None) -> OrgLLMSettings:
    """The org's guardrails: injection and moderation (off, flag or block) and its deny lists. Only the keys
    given change; the change is audited with what it was and what it became."""
    principal.require(ADMIN)
    modes = OrgLLMSettings.Guard.values
    fields: dict[str, Any] = {}
    for name in ("injection_guard", "moderation_guard"):
        if name in changes:
            if changes[name] not in modes:
                raise ApplicationError(f"`{name}` is one of: {', '.join(modes)}.", code="invalid",
                                       details={"fields": {name: [f"Choose {', '.join(modes)}."]}})  # fmt: skip
            fields[name] = changes[name]
    if "denied_keywords" in changes:
        fields["denied_keywords"] = _phrases(changes["denied_keywords"], field="denied_keywords",
                                             limit=MAX_DENIED_KEYWORDS, max_length=100)  # fmt: skip
    if "denied_topics" in changes:
        fields["denied_topics"] = _phrases(changes["denied_topics"], field="denied_topics",
                                           limit=MAX_DENIED_TOPICS, max_length=200)  # fmt: skip
    org = principal.organization
    row, _ = OrgLLMSettings.objects.for_org(org).select_for_update().get_or_create(organization=org)
    changed = {name: {"from": getattr(row, name), "to": value} for name, value in fields.items()
               if getattr(row, name) != value}  # fmt: skip
    if changed:
        for name in changed:
            setattr(row, name, fields[name])
        row.save(update_fields=[*changed, "updated_at"])  # the config memo reloads in every process
        audit_record(org=org, action="org.guardrails_changed", principal=principal, target=org, origin=origin,
                     metadata=changed)  # fmt: skip
    return row
