"""Writes for the gateway's per-org settings."""

from collections.abc import Sequence
from typing import Any

import phonenumbers
from django.db import transaction

from accounts.permissions import ADMIN, OWNER
from accounts.services import Origin, audit_record
from saas.core.errors import ApplicationError
from saas.llm.models import OrgLLMSettings

MAX_PHONE_REGIONS = 8  # each region is one more matcher pass over every phone-like candidate of every prompt


def _invalid(field: str, message: str) -> ApplicationError:
    return ApplicationError(message, code="invalid", details={"fields": {field: [message]}})


def phone_regions_clean(regions: Sequence[Any]) -> list[str]:
    """Region codes upper-cased, in order, without repeats; an unknown code is refused by name."""
    cleaned: list[str] = []
    for region in regions:
        code = str(region).strip().upper() if isinstance(region, str) else ""
        if code not in phonenumbers.SUPPORTED_REGIONS:
            raise _invalid("pii_phone_regions", f"Unknown region code: {str(region)[:20]} (codes such as US, GB, DE).")
        if code not in cleaned:
            cleaned.append(code)
    if len(cleaned) > MAX_PHONE_REGIONS:
        raise _invalid("pii_phone_regions", f"Choose at most {MAX_PHONE_REGIONS} regions.")
    return cleaned


@transaction.atomic
def pii_policy_set(
    *,
    principal: Any,
    policy: str | None = None,
    phone_regions: Sequence[Any] | None = None,
    mask_names: bool | None = None,
    origin: Origin | None = None,
) -> OrgLLMSettings:
    """How the gateway treats personal data in the org's prompts: mask it, refuse the request, or send as is;
    the regions whose national phone numbers it recognises; whether it masks person names. None: unchanged."""
    principal.require(ADMIN)
    if policy is not None and policy not in OrgLLMSettings.PiiPolicy.values:
        raise ApplicationError(f"The policy is one of: {', '.join(OrgLLMSettings.PiiPolicy.values)}.", code="invalid",
                               details={"fields": {"pii_policy": ["Choose mask, block or off."]}})  # fmt: skip
    wanted: dict[str, Any] = {}
    if policy is not None:
        wanted["pii_policy"] = policy
    if phone_regions is not None:
        wanted["pii_phone_regions"] = phone_regions_clean(phone_regions)
    if mask_names is not None:
        wanted["pii_mask_names"] = bool(mask_names)
    org = principal.organization
    row, _ = OrgLLMSettings.objects.for_org(org).select_for_update().get_or_create(organization=org)
    change = {name: {"from": getattr(row, name), "to": value} for name, value in wanted.items()
              if getattr(row, name) != value}  # fmt: skip
    if change:
        for name, value in wanted.items():
            setattr(row, name, value)
        row.save(update_fields=[*change, "updated_at"])  # the config memo reloads in every process
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


@transaction.atomic
def prompt_visibility_set(*, principal: Any, visibility: str, origin: Origin | None = None) -> OrgLLMSettings:
    """Who may read the masked prompts and answers in the request log: admins and owners, owners only, or
    nobody. Only owners change it: an admin could otherwise widen it for themselves. Audited."""
    principal.require(OWNER)
    choices = OrgLLMSettings.PromptVisibility.values
    if visibility not in choices:
        raise _invalid("prompt_visibility", f"Choose {', '.join(choices)}.")
    org = principal.organization
    row, _ = OrgLLMSettings.objects.for_org(org).select_for_update().get_or_create(organization=org)
    if row.prompt_visibility != visibility:
        change = {"prompt_visibility": {"from": row.prompt_visibility, "to": visibility}}
        row.prompt_visibility = visibility
        row.save(update_fields=["prompt_visibility", "updated_at"])  # the config memo reloads in every process
        audit_record(org=org, action="org.prompt_visibility_changed", principal=principal, target=org, origin=origin,
                     metadata=change)  # fmt: skip
    return row
