"""What a call may do, decided before anything is sent: which model answers (an alias, `default` or `auto`,
within what the org and its plan allow) and its fallback chain, whether the request is well-formed and fits
the model's context window, the guardrails on what enters the prompt, and the org's PII policy (mask,
refuse or send as is). Nothing here calls a model or writes a row: the call (saas/llm/call.py) records
every refusal raised here in its ledger row.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from django.conf import settings

from billing import selectors as billing_selectors
from saas.core.text import unstorable
from saas.llm import config as gateway_config
from saas.llm import guardrails, provider_registry, routing, tokens
from saas.llm.models import ModelConfig, OrgLLMSettings
from saas.llm.pii import Masker
from saas.llm.pii import Options as PiiOptions
from saas.llm.providers import BadRequest, ChatRequest, ContextTooLong, UpstreamUnavailable

ROLES = {"system", "user", "assistant", "tool", "developer"}
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_MESSAGES = 500


class ModelNotFound(BadRequest):
    kind = "model_not_found"


class ModelNotAllowed(BadRequest):
    kind = "model_not_allowed"


class PersonalDataBlocked(BadRequest):
    kind = "personal_data_blocked"


# --- Which model ---------------------------------------------------------------------------------------------


def org_settings(org: Any) -> OrgLLMSettings:
    return gateway_config.current().policy(org)


def allowed(model: ModelConfig, policy: OrgLLMSettings) -> bool:
    """Enabled, allowed by the org's admins, and (a chat model) included in the org's plan; the org's own
    models are its admins' choice already (saas/llm/provider_registry.py)."""
    return provider_registry.allowed(model, policy)


def choose_auto_tier(*, request: ChatRequest, feature: str, complexity: str | None, model: Any = None) -> str:
    rules = settings.LLM_AUTO_RULES
    if tokens.prompt_tokens(request.messages, model) > rules["large_if_prompt_tokens_over"]:
        return ModelConfig.Tier.LARGE
    if feature in rules["large_for_features"] or (complexity and complexity in rules["large_if_complexity"]):
        return ModelConfig.Tier.LARGE
    return ModelConfig.Tier.SMALL


def resolve_model(
    *, org: Any, feature: str, alias: str, request: ChatRequest, complexity: str | None = None,
    conf: gateway_config.Snapshot,
) -> tuple[ModelConfig, OrgLLMSettings]:  # fmt: skip
    """The chat model that answers: the alias asked for, the org's default, or for `auto` the first model of
    the right tier among those the org may use and this server can reach."""
    policy = conf.policy(org)
    if alias in ("", "default"):
        alias = policy.default_model
    if alias == "auto":
        tier = choose_auto_tier(request=request, feature=feature, complexity=complexity)
        candidates = provider_registry.reachable_models(org, conf=conf)  # the org's own first, then the operator's
        chosen = next((m for m in candidates if m.tier == tier), None) or (candidates[0] if candidates else None)
        if chosen is None:
            raise ModelNotAllowed("No model is enabled for this org.")
        return chosen, policy
    return named_model(alias, policy, ModelConfig.Kind.CHAT, conf), policy


def named_model(alias: str, policy: OrgLLMSettings, kind: str, conf: gateway_config.Snapshot) -> ModelConfig:
    model = conf.model(alias) or provider_registry.org_model(policy.organization_id, alias, conf)
    if model is None or not model.enabled:
        raise ModelNotFound(f"The model {alias!r} does not exist.")
    if model.kind != kind:
        raise BadRequest(f"{alias!r} is a {model.kind} model; this endpoint needs a {kind} model.")
    if not allowed(model, policy):
        in_plan = billing_selectors.plan_allows_model(org_id=policy.organization_id, alias=alias)
        raise ModelNotAllowed(
            f"The model {alias!r} is not allowed for this org."
            if in_plan
            else f"The model {alias!r} is not included in this org's plan: upgrade the plan to use it."
        )
    return model


def chain(model: ModelConfig, policy: OrgLLMSettings, conf: gateway_config.Snapshot) -> list[ModelConfig]:
    """The model, then its fallbacks that the org may use, each once."""
    models = [model]
    for alias in model.fallbacks:
        fallback = conf.model(alias)
        if fallback is not None and allowed(fallback, policy) and fallback not in models:
            models.append(fallback)
    return models


def check_chat_model(*, org: Any, alias: str) -> None:
    """Refuse (ModelNotFound, ModelNotAllowed, UpstreamUnavailable) a chat model this org could not use now;
    `auto` and `default` always pass. For checking configurations (a crew's agents) before they run."""
    if alias in ("", "auto", "default"):
        return
    conf = gateway_config.current()
    model = named_model(alias, conf.policy(org), ModelConfig.Kind.CHAT, conf)
    if not routing.available(model, org):
        raise UpstreamUnavailable(f"The model {alias!r} has no provider configured here.")


# --- Is the request well-formed ------------------------------------------------------------------------------


def refuse_unstorable(**fields: Any) -> None:
    """Refuse a NUL or a lone surrogate anywhere in the request before it is looked up, sent or recorded."""
    for name, value in fields.items():
        where = unstorable(value, name)
        if where is not None:
            raise BadRequest(
                f"`{where}` holds a NUL character or an unpaired surrogate, which is not text.",
                details={"param": where.split(".")[0].split("[")[0]},
            )


def validate(request: ChatRequest, model: ModelConfig) -> None:
    if not request.messages:
        raise BadRequest("`messages` must contain at least one message.")
    if len(request.messages) > MAX_MESSAGES:
        raise BadRequest(f"At most {MAX_MESSAGES} messages per request.")
    for index, message in enumerate(request.messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise BadRequest(f"messages[{index}].role must be one of {sorted(ROLES)}.")
        calls = message.get("tool_calls")
        if calls is not None and (message["role"] != "assistant" or not isinstance(calls, list) or not all(
            isinstance(c, dict) and isinstance(c.get("id"), str) and isinstance(c.get("function"), dict) for c in calls
        )):  # fmt: skip
            raise BadRequest(f"messages[{index}].tool_calls must be a list of function calls of an assistant.")
        if not isinstance(message.get("content"), str) and not (calls and message.get("content") is None):
            raise BadRequest(f"messages[{index}].content must be a string.")
        if message["role"] == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise BadRequest(f"messages[{index}].tool_call_id must name the call this message answers.")
    for index, tool in enumerate(request.tools or []):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not TOOL_NAME.fullmatch(str(function.get("name", ""))):
            raise BadRequest(f"tools[{index}] must be a function with a name of letters, digits, _ and -.")
    if request.max_tokens is not None and request.max_tokens < 1:
        raise BadRequest("`max_tokens` must be at least 1.")
    counted = tokens.prompt_tokens(request.messages, model)
    needed = counted + (request.max_tokens or 0)
    if needed > model.context_window:
        about = "" if tokens.exact_for(model) else "about "
        raise ContextTooLong(
            f"This request needs {about}{needed} tokens; {model.alias} has a context window of {model.context_window}.",
            details={"tokens": needed, "context_window": model.context_window},
        )


# --- Guardrails and personal data ----------------------------------------------------------------------------


def screen_input(guard: guardrails.Policy, request: ChatRequest, note: Any) -> ChatRequest:
    """The guardrails on what enters the prompt: the latest user message (refused when the org blocks what
    was found), and the tool results after it, quoted as data when they look like instructions. `note`
    keeps the findings for the ledger row and returns the first that blocks."""
    if not guard.active:
        return request
    messages = request.messages
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    question = messages[last_user].get("content") if last_user >= 0 else None
    if blocked := note(guardrails.screen_input(guard, question) if isinstance(question, str) else []):
        raise guardrails.refusal(blocked)
    tools = [i for i in range(last_user + 1, len(messages))
             if messages[i]["role"] == "tool" and isinstance(messages[i].get("content"), str)]  # fmt: skip
    flagged = guardrails.screen_untrusted(guard, [messages[i]["content"] for i in tools],
                                          target=guardrails.TOOL_RESULT)  # fmt: skip
    if not flagged:
        return request
    note(flagged)
    quoted = {tools[f.index - 1] for f in flagged if f.index}
    screened = [
        {**m, "content": guardrails.quote_as_data(m["content"], label="This tool result")} if i in quoted else m
        for i, m in enumerate(messages)
    ]
    return replace(request, messages=screened)


def screen_passages(*, org: Any, texts: list[str]) -> list[guardrails.Finding]:
    """The org's injection guardrail on retrieved passages, before the caller puts them into a prompt."""
    guard = guardrails.Policy.of(gateway_config.current().policy(org))
    return guardrails.screen_untrusted(guard, texts, target=guardrails.PASSAGE)


def _mask_message(message: dict[str, Any], masker: Masker) -> dict[str, Any]:
    """The message with its text and its tool calls' arguments masked (a caller sends back the calls it got,
    unmasked, with the values they carried)."""
    masked = {**message}
    if message.get("content"):
        masked["content"] = masker.mask(message["content"])
    if message.get("tool_calls"):
        masked["tool_calls"] = [
            {**call, "function": {**call["function"], "arguments": masker.mask(call["function"]["arguments"])}}
            if isinstance(call["function"].get("arguments"), str) else call
            for call in message["tool_calls"]
        ]  # fmt: skip
    return masked


def mask(request: ChatRequest, policy: OrgLLMSettings, masker: Masker) -> ChatRequest:
    """The request as the org's PII policy lets it leave: masked, refused (PersonalDataBlocked), or as is."""
    if policy.pii_policy == OrgLLMSettings.PiiPolicy.OFF:
        return request
    masker.options = PiiOptions.for_policy(policy)  # the org's phone regions; names if it masks them
    masked = [_mask_message(m, masker) for m in request.messages]
    if masker.found and policy.pii_policy == OrgLLMSettings.PiiPolicy.BLOCK:
        raise PersonalDataBlocked("This org does not send personal data (emails, phone numbers, ...) to models.")
    return replace(request, messages=masked)
