"""Reads of the gateway's ledger: the request log (the team's page /o/<slug>/requests/ and GET /api/v1/requests).

Where a call came from (a crew run, a chat conversation) is known to the layers above the gateway; they say so
through `register_call_origins` (agents does, at startup). An ask's answer is its own ledger row: the id the
ask returned, which its feedback endpoint takes, is the call's id.
"""

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet

from accounts.models import Membership
from accounts.permissions import ADMIN, OWNER
from saas.core import crypto
from saas.core.errors import NotFound
from saas.core.validators import is_uuid
from saas.llm import config
from saas.llm.models import LLMCall, OrgLLMSettings


@dataclass(frozen=True)
class RequestLogFilters:
    """What the request log may be narrowed to; empty values do not filter."""

    feature: str = ""
    model: str = ""  # the alias asked for or the one that answered
    provider: str = ""  # the upstream that answered, as the ledger recorded it
    status: str = ""
    cache: str = ""
    key: str = ""  # an API key's id or its prefix
    member: str = ""  # a member's id (as in /api/v1/members) or email
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    guarded: bool = False  # only calls the guardrails flagged or blocked


def llm_call_list(*, org: Any, filters: RequestLogFilters = RequestLogFilters()) -> QuerySet[LLMCall]:
    """The org's calls matching the filters, newest first, without their (encrypted) prompts and answers."""
    calls = LLMCall.objects.for_org(org).select_related("user", "api_key").defer("input_encrypted", "output_encrypted")
    if filters.feature:
        calls = calls.filter(feature=filters.feature)
    if filters.model:
        calls = calls.filter(Q(model_used=filters.model) | Q(model_requested=filters.model))
    if filters.provider:
        calls = calls.filter(upstream=filters.provider)
    if filters.status:
        calls = calls.filter(status=filters.status)
    if filters.cache:
        calls = calls.filter(cache=filters.cache)
    if filters.key:
        calls = (
            calls.filter(api_key_id=filters.key) if is_uuid(filters.key) else calls.filter(api_key__prefix=filters.key)
        )
    if filters.member:
        if is_uuid(filters.member):
            members = Membership.objects.for_org(org).filter(pk=filters.member).values("user_id")
            calls = calls.filter(user_id__in=members)
        else:
            calls = calls.filter(user__email__iexact=filters.member)
    if filters.since:
        calls = calls.filter(created_at__gte=filters.since)
    if filters.until:
        calls = calls.filter(created_at__lt=filters.until)
    if filters.guarded:
        calls = calls.exclude(guardrails=[])
    return calls.order_by("-created_at", "-id")


def llm_call_get(*, org: Any, call_id: Any) -> LLMCall:
    """One of the org's calls, with its encrypted prompt and answer; another org's call is not found."""
    call = LLMCall.objects.for_org(org).select_related("user", "api_key").filter(pk=call_id).first()
    if call is None:
        raise NotFound("No such request.")
    return call


def llm_call_filter_choices(*, org: Any) -> dict[str, list[str]]:
    """The features, models and providers the org's ledger holds, for the page's filter menus (its newest
    calls; an older value can still be typed into the URL)."""
    recent = LLMCall.objects.for_org(org).order_by("-created_at")[:2000]
    rows = list(recent.values_list("feature", "model_used", "upstream"))
    return {
        "features": sorted({feature for feature, _, _ in rows if feature}),
        "models": sorted({model for _, model, _ in rows if model}),
        "providers": sorted({upstream for _, _, upstream in rows if upstream}),
    }


# --- Who may read prompts and answers -----------------------------------------------------------------------


def prompt_visible(*, principal: Any) -> bool:
    """Whether the org's policy lets this principal read stored prompts and answers (masked as they were sent):
    admins and owners (API keys with the admin scope too), owners only, or nobody."""
    policy = config.current().policy(principal.organization).prompt_visibility
    if policy == OrgLLMSettings.PromptVisibility.ADMINS:
        return bool(principal.has(ADMIN))
    if policy == OrgLLMSettings.PromptVisibility.OWNERS:
        return bool(principal.has(OWNER))  # no API key holds OWNER
    return False


@dataclass(frozen=True)
class CallContent:
    prompt: str  # as stored: masked, the messages as JSON for chat calls, empty for embeddings
    messages: list[dict[str, Any]] | None  # the prompt's messages, when it holds a list of them
    answer: str


def llm_call_content(*, call: LLMCall) -> CallContent:
    """The call's stored prompt and answer (personal data masked as the org's policy had it; erased or purged
    content reads as empty)."""
    prompt = crypto.decrypt(call.input_encrypted) if call.input_encrypted else ""
    answer = crypto.decrypt(call.output_encrypted) if call.output_encrypted else ""
    messages = None
    try:
        parsed = json.loads(prompt) if prompt.startswith("[") else None
    except ValueError:
        parsed = None
    if isinstance(parsed, list) and all(isinstance(m, dict) for m in parsed):
        messages = parsed
    return CallContent(prompt=prompt, messages=messages, answer=answer)


# --- Where a call came from ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallOrigin:
    kind: str  # "crew_run", "conversation" or "ask"
    id: str
    url: str | None = None  # the page showing it, when there is one


OriginFinder = Callable[[Any, list[LLMCall]], dict[Any, CallOrigin]]
_origin_finders: list[OriginFinder] = []


def register_call_origins(finder: OriginFinder) -> None:
    """A higher layer (agents) names the run or conversation of the calls it knows: finder(org, calls) returns
    {call id: CallOrigin}, in a bounded number of queries for the whole page."""
    if finder not in _origin_finders:
        _origin_finders.append(finder)


def call_origins(*, org: Any, calls: Iterable[LLMCall]) -> dict[Any, CallOrigin]:
    """Where each call came from, for a page of calls: a crew run, a chat conversation or an ask."""
    calls = list(calls)
    snapshot = config.current()

    def answers(call: LLMCall) -> bool:  # the ask's answer, not the embedding of its question
        model = snapshot.model(call.model_used or call.model_requested)
        return model is None or model.kind == model.Kind.CHAT

    origins: dict[Any, CallOrigin] = {
        call.pk: CallOrigin("ask", str(call.pk)) for call in calls if call.feature == "ask" and answers(call)
    }
    for finder in _origin_finders:
        origins.update(finder(org, calls))
    return origins


def traces_recorded(*, org: Any, ids: Iterable[str]) -> set[str]:
    """Of these trace ids (ledger rows' `trace_id`, crew run ids), those whose trace was recorded: one query."""
    from saas.llm.models import Trace

    wanted = {value for value in ids if value and is_uuid(value)}
    if not wanted:
        return set()
    return {str(pk) for pk in Trace.objects.for_org(org).filter(pk__in=wanted).values_list("pk", flat=True)}
