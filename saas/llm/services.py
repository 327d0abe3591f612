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
