from typing import Any

from django import template
from django.conf import settings

from saas.llm import config
from saas.llm.models import OrgLLMSettings

register = template.Library()


@register.simple_tag
def pii_policy(org: Any) -> dict[str, Any]:
    """The org's PII policy, its choices and options, for the settings page."""
    row = config.current().policy(org)
    return {
        "value": row.pii_policy,
        "choices": OrgLLMSettings.PiiPolicy.choices,
        "regions": ", ".join(row.pii_phone_regions),
        "default_regions": ", ".join(settings.LLM_PII_PHONE_REGIONS),
        "mask_names": row.pii_mask_names,
    }


@register.simple_tag
def guardrails_policy(org: Any) -> dict[str, Any]:
    """The org's guardrails and the modes to choose from, for the settings page."""
    policy = config.current().policy(org)
    return {"injection": policy.injection_guard, "moderation": policy.moderation_guard,
            "denied_keywords_text": "\n".join(policy.denied_keywords),
            "denied_topics_text": "\n".join(policy.denied_topics),
            "choices": OrgLLMSettings.Guard.choices}  # fmt: skip


@register.simple_tag
def request_log_policy(org: Any) -> dict[str, Any]:
    """Who may read stored prompts and answers, and the choices, for the settings page."""
    return {"value": config.current().policy(org).prompt_visibility, "choices": OrgLLMSettings.PromptVisibility.choices}
