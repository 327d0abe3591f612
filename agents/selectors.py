"""Reads for crews and runs."""

import json
import uuid
from typing import Any

from django.db.models import Count, Sum
from django.urls import reverse

from agents.engine import step_json
from agents.models import Message, Run, RunStep
from saas.core import crypto
from saas.llm.selectors import CallOrigin


def run_steps(run: Run) -> list[dict[str, Any]]:
    steps = RunStep.objects.for_org(run.organization_id).filter(run=run).order_by("seq")
    return [step_json(step) for step in steps]


def run_breakdown(run: Run) -> dict[str, list[dict[str, Any]]]:
    """Tokens and cost per agent and per task (the manager counts as an agent)."""
    steps = RunStep.objects.for_org(run.organization_id).filter(run=run)

    def by(field: str) -> list[dict[str, Any]]:
        rows = (
            steps.exclude(**{field: ""})
            .values(field)
            .annotate(prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"), cost=Sum("cost_usd"),
                      calls=Count("llm_call"))
            .order_by(field)
        )  # fmt: skip
        return [
            {"name": row[field], "prompt_tokens": row["prompt"], "completion_tokens": row["completion"],
             "cost_usd": f"{row['cost']:f}", "llm_calls": row["calls"]}
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
    return body


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def llm_call_origins(org: Any, calls: list[Any]) -> dict[Any, CallOrigin]:
    """For the gateway's request log: the crew run (by the calls' trace id) or the chat conversation (by the
    message the call answered) each call belongs to; two queries for a page of calls."""
    origins: dict[Any, CallOrigin] = {}
    traces = {call.trace_id for call in calls if _is_uuid(call.trace_id)}
    if traces:
        runs = {str(pk) for pk in Run.objects.for_org(org).filter(pk__in=traces).values_list("pk", flat=True)}
        for call in calls:
            if call.trace_id in runs:
                origins[call.pk] = CallOrigin(
                    "crew_run", call.trace_id, reverse("run-detail", args=[org.slug, call.trace_id])
                )
    chats = [call.pk for call in calls if call.feature == "chat" and call.pk not in origins]
    if chats:
        answered = (
            Message.objects.for_org(org).filter(llm_call_id__in=chats).values_list("llm_call_id", "conversation_id")
        )
        for call_id, conversation_id in answered:
            origins[call_id] = CallOrigin(
                "conversation", str(conversation_id), reverse("chat-conversation", args=[org.slug, conversation_id])
            )
    return origins
