from typing import Any

from django import template

from saas.llm import config
from saas.llm.models import OrgLLMSettings

register = template.Library()


@register.simple_tag
def pii_policy(org: Any) -> dict[str, Any]:
    """The org's PII policy and its choices, for the settings page."""
    return {"value": config.current().policy(org).pii_policy, "choices": OrgLLMSettings.PiiPolicy.choices}
