"""Agents' share of exports and erasure (saas/core/privacy.py): chat conversations and their messages, feedback,
crews (with their schedules) and their runs and steps.

When content goes, the prompts and answers its ledger rows hold go too: the rows stay (they are the bill), blank."""

from contextlib import suppress
from typing import Any

import redis
from django.db import transaction
from django.db.models import Q

from agents import engine
from agents.models import Conversation, Crew, Feedback, Message, Run
from agents.selectors import run_json
from agents.services import crew_spec
from saas.core import crypto
from saas.core.privacy import ExportSink, Store, Subject
from saas.core.redis import get_redis
from saas.llm import ledger
from saas.llm.models import LLMCall


def _conversation_json(conversation: Conversation) -> dict[str, Any]:
    messages = Message.objects.for_org(conversation.organization_id).filter(conversation=conversation)
    return {
        "id": str(conversation.pk), "title": conversation.title, "model": conversation.model,
        "created_at": conversation.created_at.isoformat(),
        "messages": [
            {"role": m.role, "content": crypto.decrypt(m.content_encrypted), "status": m.status, "model": m.model,
             "created_at": m.created_at.isoformat()}
            for m in messages.order_by("created_at")
        ],
    }  # fmt: skip


def _feedback_json(feedback: Feedback) -> dict[str, Any]:
    return {
        "id": str(feedback.pk), "rating": feedback.rating, "comment": feedback.comment,
        "message": str(feedback.message_id) if feedback.message_id else None,
        "llm_call": str(feedback.llm_call_id) if feedback.llm_call_id else None,
        "created_at": feedback.created_at.isoformat(),
    }  # fmt: skip


def _crew_json(crew: Crew) -> dict[str, Any]:
    return {"id": str(crew.pk), "created_at": crew.created_at.isoformat(), **crew_spec(crew)}


def _export(sink: ExportSink, folder: str, *, conversations: Any, feedback: Any, crews: Any, runs: Any) -> None:
    sink.json(f"{folder}/conversations.json", [_conversation_json(c) for c in conversations.order_by("created_at")])
    sink.json(f"{folder}/feedback.json", [_feedback_json(f) for f in feedback.order_by("created_at")])
    sink.json(f"{folder}/crews.json", [_crew_json(c) for c in crews.order_by("created_at")])
    sink.json(f"{folder}/crew_runs.json", [run_json(r, with_steps=True) for r in runs.order_by("created_at")])


def export_user(*, sink: ExportSink, user_id: Any, org_id: Any, folder: str) -> None:
    _export(
        sink, folder,
        conversations=Conversation.objects.for_org(org_id).filter(user_id=user_id),
        feedback=Feedback.objects.for_org(org_id).filter(user_id=user_id),
        crews=Crew.objects.for_org(org_id).filter(created_by_id=user_id),
        runs=Run.objects.for_org(org_id).filter(started_by_id=user_id),
    )  # fmt: skip


def export_org(*, sink: ExportSink, org_id: Any, folder: str) -> None:
    _export(
        sink, folder,
        conversations=Conversation.objects.for_org(org_id), feedback=Feedback.objects.for_org(org_id),
        crews=Crew.objects.for_org(org_id), runs=Run.objects.for_org(org_id),
    )  # fmt: skip


def _blank_ledger(org_id: Any, **match: Any) -> None:
    LLMCall.objects.for_org(org_id).filter(**match).update(input_encrypted="", output_encrypted="", user=None)


def _delete_runs(org_id: Any, runs: Any, batch_size: int) -> int:
    """A run still going is told to stop (its worker then finds it gone); its calls' prompts are blanked."""
    with transaction.atomic():
        batch = list(runs.values_list("pk", "status")[:batch_size])
        ids = [pk for pk, _ in batch]
        for pk, status in batch:
            if status not in Run.FINISHED:
                with suppress(redis.RedisError):
                    get_redis().set(engine.cancel_key(pk), 1, ex=24 * 3600)
        _blank_ledger(org_id, trace_id__in=[str(pk) for pk in ids])
        Run.objects.for_org(org_id).filter(pk__in=ids).delete()
    return len(batch)


def _delete_conversations(org_id: Any, conversations: Any, batch_size: int) -> int:
    ledger.catch_up()  # an answer's row still in the ledger stream is written first, and then blanked below
    with transaction.atomic():
        ids = list(conversations.values_list("pk", flat=True)[:batch_size])
        calls = Message.objects.for_org(org_id).filter(conversation_id__in=ids, llm_call__isnull=False)
        _blank_ledger(org_id, pk__in=list(calls.values_list("llm_call_id", flat=True)))
        Conversation.objects.for_org(org_id).filter(pk__in=ids).delete()  # messages and their feedback too
    return len(ids)


def _delete_crews(org_id: Any, crews: Any, batch_size: int) -> int:
    """Callers delete the crews' runs first (`_delete_runs`: the ledger's copies go with them)."""
    ids = list(crews.values_list("pk", flat=True)[:batch_size])
    Crew.objects.for_org(org_id).filter(pk__in=ids).delete()  # agents, tasks and the schedule with them
    return len(ids)


def erase_user(*, subject: Subject, batch_size: int) -> int:
    org_id, user_id = subject.org_id, subject.user_id
    # A conversation is private to its member: it always goes.
    erased = _delete_conversations(org_id, Conversation.objects.for_org(org_id).filter(user_id=user_id), batch_size)
    if erased:
        return erased
    # Feedback stays, without the person: the rating counts, their comment is their words.
    theirs = list(Feedback.objects.for_org(org_id).filter(user_id=user_id).values_list("pk", flat=True)[:batch_size])
    if theirs:
        return Feedback.objects.for_org(org_id).filter(pk__in=theirs).update(user=None, comment_encrypted="")
    crews = Crew.objects.for_org(org_id).filter(created_by_id=user_id)
    runs = Run.objects.for_org(org_id).filter(started_by_id=user_id)
    if subject.transfer_content:
        erased = crews.filter(pk__in=list(crews.values_list("pk", flat=True)[:batch_size])).update(created_by=None)
        if erased:
            return erased
        return runs.filter(pk__in=list(runs.values_list("pk", flat=True)[:batch_size])).update(started_by=None)
    runs_to_go = Run.objects.for_org(org_id).filter(Q(started_by_id=user_id) | Q(crew__created_by_id=user_id))
    return _delete_runs(org_id, runs_to_go, batch_size) or _delete_crews(org_id, crews, batch_size)


def erase_org(*, org_id: Any, batch_size: int) -> int:
    feedback = list(Feedback.objects.for_org(org_id).values_list("pk", flat=True)[:batch_size])
    if feedback:
        return Feedback.objects.for_org(org_id).filter(pk__in=feedback).delete()[0]
    return (
        _delete_conversations(org_id, Conversation.objects.for_org(org_id), batch_size)
        or _delete_runs(org_id, Run.objects.for_org(org_id), batch_size)
        or _delete_crews(org_id, Crew.objects.for_org(org_id), batch_size)
    )


STORE = Store(
    name="agents",
    title="Chats and crews",
    what="Chat conversations and their messages; thumbs up/down with comments; crews (agents, tasks, schedules), "
    "their runs, inputs, steps and outputs",
    where="PostgreSQL (conversation titles, messages, feedback comments, schedule and run inputs, run outputs, "
    "errors and steps encrypted at rest)",
    kept="Until deleted; conversations as long as the team's conversation retention says",
    retention_setting="retain_conversations_days",
    export_user=export_user,
    export_org=export_org,
    erase_user=erase_user,
    erase_org=erase_org,
)
