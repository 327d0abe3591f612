"""Reads for crews and runs."""

import json
import uuid
from typing import Any

from django.db.models import Count, F, FilteredRelation, Q, QuerySet, Sum
from django.urls import reverse

from agents import definitions
from agents.engine import step_json
from agents.models import Crew, Message, Run, RunStep, Task
from saas.core import crypto
from saas.core.db import CompiledQuery
from saas.core.validators import is_uuid
from saas.llm.local_engine import ENGINE_LABEL
from saas.llm.models import LLMCall
from saas.llm.selectors import CallOrigin


def crew_list(*, org: Any, query: str = "") -> QuerySet[Crew]:
    """The org's crews by name, with their agent count; `query` matches the name or the description."""
    crews = Crew.objects.for_org(org).annotate(agent_count=Count("agents")).order_by("name", "pk")
    query = query.strip()
    if query:
        crews = crews.filter(Q(name__icontains=query) | Q(description__icontains=query))
    return crews


def crew_last_runs(*, org: Any, crews: list[Crew]) -> dict[Any, Run]:
    """Each crew's latest run, in one query."""
    runs = Run.objects.for_org(org).filter(crew__in=crews).order_by("crew_id", "-created_at").distinct("crew_id")
    return {run.crew_id: run for run in runs}


def crew_inputs(*, org: Any, crews: list[Crew]) -> dict[Any, list[str]]:
    """Each crew's inputs (its tasks' placeholders, in order), in one query."""
    tasks = Task.objects.for_org(org).filter(crew__in=crews).order_by("crew_id", "position")
    by_crew: dict[Any, list[dict[str, Any]]] = {}
    for crew_id, description, expected in tasks.values_list("crew_id", "description", "expected_output"):
        by_crew.setdefault(crew_id, []).append({"description": description, "expected_output": expected})
    return {crew_id: definitions.inputs_needed({"tasks": listed}) for crew_id, listed in by_crew.items()}


def run_list(*, org: Any, crew: Crew | None = None, status: str = "") -> QuerySet[Run]:
    """Runs, newest first; of one crew, of one status (the inputs and outputs are encrypted: they are not
    searchable in the database)."""
    runs = Run.objects.for_org(org).order_by("-created_at", "-pk")
    if crew is not None:
        runs = runs.filter(crew=crew)
    if status in Run.Status.values:
        runs = runs.filter(status=status)
    return runs


def engine_text(engine: str, model: str) -> str:
    """How a page names what answered: the offline engine is not a model, and says so."""
    if engine == ENGINE_LABEL:
        return "the offline extractive engine (it quotes your documents; not a generative model)"
    return f"{model} ({engine})" if engine else model


def run_engines(steps: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The models and engines that answered the run's calls, in the order they first did."""
    seen: dict[tuple[str, str], dict[str, str]] = {}
    for step in steps:
        data = step.get("data") or {}
        if step["kind"] == "message" and data.get("engine"):
            key = (str(data.get("model") or ""), str(data["engine"]))
            seen.setdefault(key, {"model": key[0], "engine": key[1], "label": engine_text(key[1], key[0])})
    return list(seen.values())


def run_task_outputs(run: Run) -> dict[str, str]:
    """Each task's recorded output, by task name (the last one recorded wins: a revised output)."""
    steps = RunStep.objects.for_org(run.organization_id).filter(run=run, kind=RunStep.Kind.OUTPUT).order_by("seq")
    return {step.task_name: crypto.decrypt(step.content_encrypted) for step in steps}


def run_steps(run: Run) -> list[dict[str, Any]]:
    steps = RunStep.objects.for_org(run.organization_id).filter(run=run).order_by("seq")
    return [step_json(step) for step in steps]


def run_breakdown(run: Run) -> dict[str, list[dict[str, Any]]]:
    """Tokens, cost and time (the model calls' and tools' latency) per agent and per task (the manager counts
    as an agent)."""
    steps = RunStep.objects.for_org(run.organization_id).filter(run=run)

    def by(field: str) -> list[dict[str, Any]]:
        rows = (
            steps.exclude(**{field: ""})
            .values(field)
            .annotate(prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"), cost=Sum("cost_usd"),
                      calls=Count("llm_call"), duration=Sum("latency_ms"))
            .order_by(field)
        )  # fmt: skip
        return [
            {"name": row[field], "prompt_tokens": row["prompt"], "completion_tokens": row["completion"],
             "cost_usd": f"{row['cost']:f}", "llm_calls": row["calls"], "duration_ms": row["duration"]}
            for row in rows
        ]  # fmt: skip

    return {"agents": by("agent_role"), "tasks": by("task_name")}


def run_json(run: Run, *, with_steps: bool = False) -> dict[str, Any]:
    output = crypto.decrypt(run.output_encrypted)
    tasks = run.definition.get("tasks") or []
    output_json = None
    if output and tasks and tasks[-1].get("output_format") == "json":
        output_json = json.loads(output)
    duration = (run.finished_at - run.started_at).total_seconds() * 1000 if run.finished_at and run.started_at else None
    body: dict[str, Any] = {
        "id": str(run.pk), "crew": {"id": str(run.crew_id), "name": run.definition.get("name", "")},
        "status": run.status, "trigger": run.trigger, "inputs": run.inputs, "output": output,
        "output_json": output_json,
        "error": {"code": run.error_code, "message": run.error} if run.error_code else None,
        "prompt_tokens": run.prompt_tokens, "completion_tokens": run.completion_tokens,
        "tokens": run.prompt_tokens + run.completion_tokens, "cost_usd": f"{run.cost_usd:f}",
        "attempts": run.attempts, "cancel_requested": run.cancel_requested_at is not None,
        "created_at": run.created_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "duration_ms": round(duration) if duration is not None else None,
    }  # fmt: skip
    if with_steps:
        body["steps"] = run_steps(run)
        body["breakdown"] = run_breakdown(run)
        body["engines"] = run_engines(body["steps"])
    return body


def llm_call_origins(org: Any, calls: list[Any]) -> dict[Any, CallOrigin]:
    """For the gateway's request log: the crew run (by the calls' trace id) or the chat conversation (by the
    message the call answered: a chat's, or an ask's in the workspace) each call belongs to; two queries for a
    page of calls."""
    origins: dict[Any, CallOrigin] = {}
    traces = {call.trace_id for call in calls if is_uuid(call.trace_id)}
    if traces:
        runs = {str(pk) for pk in Run.objects.for_org(org).filter(pk__in=traces).values_list("pk", flat=True)}
        for call in calls:
            if call.trace_id in runs:
                origins[call.pk] = CallOrigin(
                    "crew_run", call.trace_id, reverse("run-detail", args=[org.slug, call.trace_id])
                )
    chats = [call.pk for call in calls if call.feature in ("chat", "ask") and call.pk not in origins]
    if chats:
        answered = (
            Message.objects.for_org(org).filter(llm_call_id__in=chats).values_list("llm_call_id", "conversation_id")
        )
        for call_id, conversation_id in answered:
            origins[call_id] = CallOrigin(
                "conversation", str(conversation_id), reverse("chat-conversation", args=[org.slug, conversation_id])
            )
    return origins


def answer_traces(*, org: Any, messages: list[Any]) -> dict[Any, str]:
    """The trace of each answer that has a recorded one (by its ledger row's trace id): two queries."""
    from saas.llm.selectors import traces_recorded

    calls = {m.llm_call_id: m.pk for m in messages if m.llm_call_id}
    if not calls:
        return {}
    trace_ids = dict(LLMCall.objects.for_org(org).filter(pk__in=calls).values_list("pk", "trace_id"))
    recorded = traces_recorded(org=org, ids=trace_ids.values())
    return {calls[pk]: trace for pk, trace in trace_ids.items() if trace in recorded}


def feedback_trace(*, feedback: Any) -> str | None:
    """The trace of the answer a feedback rates (a chat answer's or an ask response's ledger row), if recorded."""
    from saas.llm.selectors import traces_recorded

    call_id = feedback.llm_call_id or (feedback.message.llm_call_id if feedback.message_id else None)
    if call_id is None:
        return None
    trace = LLMCall.objects.for_org(feedback.organization_id).filter(pk=call_id).values_list("trace_id", flat=True)
    found = trace.first() or ""
    return found if traces_recorded(org=feedback.organization_id, ids=[found]) else None


def _conversation_with_member(conversation_id: Any, user_id: Any) -> QuerySet[Any]:
    from agents.models import Conversation

    member = FilteredRelation("organization__memberships", condition=Q(organization__memberships__user_id=F("user_id")))
    return (
        Conversation.all_orgs.annotate(member=member)
        .select_related("organization", "user", "member")
        .filter(pk=conversation_id, user_id=user_id)
    )


_CONVERSATION_WITH_MEMBER = CompiledQuery(
    _conversation_with_member, conversation_id=uuid.UUID(int=0x5E771E), user_id=-0x5E771F
)


def conversation_with_member(*, conversation_id: Any, user_id: Any) -> Any:
    """The person's conversation with its org, its owner and their membership in the org (`.member`, None
    when they are no longer a member or the org is being deleted), in one query compiled once per process;
    None if the conversation is not theirs (or not anywhere). The websocket chat's access check, on connect
    and before every frame (agents/consumers.py)."""
    if not is_uuid(str(conversation_id)):
        return None
    conversation = _CONVERSATION_WITH_MEMBER.first(conversation_id=uuid.UUID(str(conversation_id)), user_id=user_id)
    if conversation is not None:
        # No membership row: select_related leaves the attribute unset. An org being deleted is gone for
        # everyone (accounts/selectors._memberships).
        gone = conversation.organization.deletion_requested_at is not None
        conversation.member = None if gone else getattr(conversation, "member", None)
    return conversation
