"""Chat (conversations, their messages, the streamed answer, feedback) and crews (their definitions and
schedules). Runs of a crew are agents/crew_runs.py's; the run itself is agents/engine.py."""

from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from croniter import croniter
from django.db import connection, transaction
from django.utils import timezone

from accounts.services import audit_record
from agents import definitions, starters
from agents.models import Agent, Conversation, Crew, Feedback, Message, Run, Task
from saas.core import crypto
from saas.core.errors import ApplicationError, Conflict, NotFound
from saas.core.tenancy import org_id_for
from saas.llm import gateway, ledger
from saas.llm.prompts import ResolvedPrompt
from saas.llm.providers import ChatRequest, LLMError

MAX_QUESTION_CHARS = 20_000
HISTORY_MESSAGES = 20


def conversation_create(*, org: Any, user: Any, model: str = "auto") -> Conversation:
    return Conversation.objects.for_org(org).create(organization=org, user=user, model=model[:64] or "auto")


def conversation_get(*, org: Any, user: Any, conversation_id: Any) -> Conversation:
    conversation = Conversation.objects.for_org(org).filter(pk=conversation_id, user=user).first()
    if conversation is None:
        raise NotFound("No such conversation.")
    return conversation


def message_text(message: Message) -> str:
    return crypto.decrypt(message.content_encrypted)


@dataclass
class Turn:
    """A turn just started: the question, the empty answer the stream will fill, and what the turn's start
    read on the way (so the answer reads none of it again): the earlier turns with the question last (the
    model's context), and whether the question opened the conversation under a title taken from it (then its
    first complete answer queues the title summary, agents/titles.py), and whether the conversation draws on
    picked collections (agents/conversations.grounding reads them only then)."""

    asked: Message
    answer: Message
    history: list[dict[str, str]]
    titles_from_question: bool
    picks_collections: bool


def chat_turn_start(*, conversation: Conversation, question: str, model: str) -> tuple[Message, Message]:
    """Saves the question and an empty assistant message that the stream will fill."""
    turn = chat_turn_begin(conversation=conversation, question=question, model=model)
    return turn.asked, turn.answer


@transaction.atomic
def chat_turn_begin(*, conversation: Conversation, question: str, model: str) -> Turn:
    """`chat_turn_start` in three statements: the earlier turns read (which also says whether there are any),
    both messages inserted in one, and the conversation's update, which titles an empty conversation from its
    question unless its member named it, and returns the title it now has (`conversation` is brought up to
    date: the "started" event shows it)."""
    question = question.strip()
    if not question or len(question) > MAX_QUESTION_CHARS:
        raise ApplicationError(f"A question is 1 to {MAX_QUESTION_CHARS} characters.", code="invalid")
    org = conversation.organization
    earlier = _earlier_turns(conversation)
    first = not earlier
    messages = Message.objects.for_org(org)
    asked = Message(organization=org, conversation=conversation, role=Message.Role.USER,
                    content_encrypted=crypto.encrypt(question))  # fmt: skip
    answer = Message(organization=org, conversation=conversation, role=Message.Role.ASSISTANT,
                     status=Message.Status.STREAMING, model=model)  # fmt: skip
    messages.bulk_create([asked, answer])  # in this order: the question's created_at is the earlier
    conversation.model = model[:64] or "auto"
    if first:  # titled from the first question at once, summarised once answered (agents/titles.py)
        from agents.titles import title_from  # (that module builds on this one)

        title = crypto.encrypt(title_from(question))
    else:
        title = None
    conversation.title_encrypted, conversation.title_source, picks = _conversation_touch(conversation, title)
    history = [{"role": role, "content": text} for role, status, content in earlier
               if status != Message.Status.ERROR and (text := crypto.decrypt(content))]  # fmt: skip
    history.append({"role": Message.Role.USER, "content": question})
    titles_from_question = first and conversation.title_source == Conversation.TitleSource.QUESTION
    return Turn(asked, answer, history, titles_from_question, picks)


def _earlier_turns(conversation: Conversation) -> list[tuple[str, str, str]]:
    """The conversation's last HISTORY_MESSAGES messages that did not fail, oldest first, and one failed message
    if any, as (role, status, content_encrypted): one query that gives the model's context and says whether
    the conversation is empty. (SQL of its own: Django's compiler cost more CPU than the database here, 2.5 ms
    of a chat answer's 24 under py-spy.)"""
    table = Message._meta.db_table
    org_id = org_id_for(conversation.organization_id)
    error = Message.Status.ERROR
    with connection.cursor() as cursor:
        cursor.execute(
            f"(SELECT role, status, content_encrypted, created_at FROM {table}"  # noqa: S608  (the model's name)
            f"  WHERE organization_id = %s AND conversation_id = %s AND status <> %s"
            f"  ORDER BY created_at DESC LIMIT %s)"
            f" UNION ALL (SELECT role, status, '', created_at FROM {table}"
            f"  WHERE organization_id = %s AND conversation_id = %s AND status = %s LIMIT 1)",
            [org_id, conversation.pk, error, HISTORY_MESSAGES, org_id, conversation.pk, error],
        )  # fmt: skip
        rows = cursor.fetchall()
    return [(role, status, content) for role, status, content, _ in sorted(rows, key=lambda row: row[3])]


def _conversation_touch(conversation: Conversation, title: str | None) -> tuple[str, str, bool]:
    """The conversation's updated_at and model saved, and with `title` (encrypted) its title from the question,
    unless its member named it (read in the same statement: a rename in another tab is never overwritten).
    Returns the title and its source as they now are, and whether collections are picked. (SQL of its own:
    Django's update cannot return them.)"""
    table = Conversation._meta.db_table
    picked = Conversation.collections.through._meta.db_table
    user = Conversation.TitleSource.USER
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET updated_at = %s, model = %s,"  # noqa: S608  (names from the model, values bound)
            f" title_encrypted = CASE WHEN %s AND NOT (title_source = %s AND title_encrypted <> '')"
            f"   THEN %s ELSE title_encrypted END,"
            f" title_source = CASE WHEN %s AND NOT (title_source = %s AND title_encrypted <> '')"
            f"   THEN %s ELSE title_source END"
            f" WHERE id = %s AND organization_id = %s RETURNING title_encrypted, title_source,"
            f" EXISTS (SELECT 1 FROM {picked} WHERE {picked}.conversation_id = {table}.id)",
            [timezone.now(), conversation.model, title is not None, user, title or "", title is not None, user,
             Conversation.TitleSource.QUESTION, conversation.pk, org_id_for(conversation.organization_id)],
        )  # fmt: skip
        row = cursor.fetchone()
    if row is None:
        raise NotFound("No such conversation.")  # deleted meanwhile
    return row[0], row[1], bool(row[2])


def chat_history(*, conversation: Conversation, before: Message) -> list[dict[str, str]]:
    messages = (
        Message.objects.for_org(conversation.organization)
        .filter(conversation=conversation, created_at__lt=before.created_at)
        .exclude(status=Message.Status.ERROR)
        .order_by("-created_at")[:HISTORY_MESSAGES]
    )
    return [{"role": m.role, "content": message_text(m)} for m in reversed(list(messages)) if message_text(m)]


def chat_request(
    *, conversation: Conversation, answer: Message, caller: gateway.Caller, history: list[dict[str, str]] | None = None
) -> tuple[str, ChatRequest, ResolvedPrompt]:
    """What the gateway is asked for `answer`: the model, the conversation's system prompt and its earlier
    turns (`history`, when the turn's start read them already), and the prompt (for the ledger)."""
    if history is None:
        history = chat_history(conversation=conversation, before=answer)
    prompt = gateway.resolve_prompt(caller=caller, key="chat.system")  # its text empty: no system message
    system = [{"role": "system", "content": text}] if (text := prompt.render().strip()) else []
    request = ChatRequest([*system, *history], **prompt.request_options())
    return prompt.model_for(answer.model or "auto"), request, prompt


def chat_answer_stream(
    *, conversation: Conversation, answer: Message, caller: gateway.Caller, should_stop: Callable[[], bool]
) -> Generator[dict[str, Any], None, None]:
    """Runs the gateway stream for `answer` and yields events for the browser; saves the outcome, whatever
    it is. `should_stop` is checked between tokens: a stop closes the upstream stream (the gateway records
    the call as cancelled) and keeps what had arrived."""
    parts: list[str] = []
    stream = None
    try:
        model, request, prompt = chat_request(conversation=conversation, answer=answer, caller=caller)
        stream = gateway.chat_stream(caller=caller, model=model, request=request, prompt=prompt)
        for item in stream:
            if isinstance(item, gateway.GatewayStreamEnd):
                _finish(answer, "".join(parts), Message.Status.COMPLETE, model=item.model, engine=item.engine,
                        call_id=item.call_id)  # fmt: skip
                yield {"type": "done", "message": str(answer.pk), "status": "complete", "model": item.model,
                       "engine": item.engine}  # fmt: skip
                return
            parts.append(item)
            yield {"type": "delta", "message": str(answer.pk), "text": item}
            if should_stop():
                stream.close()
                _finish(answer, "".join(parts), Message.Status.CANCELLED)
                yield {"type": "done", "message": str(answer.pk), "status": "cancelled", "model": answer.model}
                return
    except LLMError as error:
        _finish(answer, "".join(parts), Message.Status.ERROR, error=error.message)
        yield {"type": "error", "message": str(answer.pk), "error": {"code": error.kind, "message": error.message}}
    finally:
        if stream is not None:
            stream.close()


def _finish(answer: Message, text: str, status: str, *, model: str = "", engine: str = "", call_id: str = "",
            error: str = "") -> None:  # fmt: skip
    answer.content_encrypted = crypto.encrypt(text)
    answer.status = status
    answer.error = error[:500]
    fields = ["content_encrypted", "status", "error_encrypted", "updated_at"]
    if model:
        answer.model, answer.engine, answer.llm_call_id = model, engine, call_id or None
        fields += ["model", "engine", "llm_call"]
    answer.save(update_fields=fields)


def answer_get(*, org: Any, message_id: Any, user: Any = None) -> Message:
    """An assistant message of the org; for a person, only in their own (private) conversations."""
    message = (
        Message.objects.for_org(org)
        .select_related("conversation")
        .filter(pk=message_id, role=Message.Role.ASSISTANT)
        .first()
    )
    if message is None or (user is not None and message.conversation.user_id != user.pk):
        raise NotFound("No such answer.")
    return message


@transaction.atomic
def feedback_give(
    *, org: Any, message_id: Any, rating: int, comment: str, user: Any = None, api_key: Any = None
) -> Feedback:
    message = answer_get(org=org, message_id=message_id, user=user)
    return _feedback_save(org=org, answer={"message": message}, rating=rating, comment=comment, user=user,
                          api_key=api_key)  # fmt: skip


def _feedback_save(*, org: Any, answer: dict[str, Any], rating: int, comment: str, user: Any, api_key: Any) -> Feedback:
    """One rating per person and answer (a second replaces the first); a key's ratings are each kept."""
    if rating not in (Feedback.Rating.UP, Feedback.Rating.DOWN):
        raise ApplicationError("The rating is up or down.", code="invalid")
    values = {"rating": rating, "comment": comment.strip()[:2000], "api_key": api_key}
    if user is not None:
        feedback, _ = Feedback.objects.for_org(org).update_or_create(
            organization=org, user=user, **answer, defaults=values
        )
        return feedback
    return Feedback.objects.for_org(org).create(organization=org, **answer, **values)


def response_get(*, org: Any, call_id: Any, user: Any = None, api_key: Any = None) -> Any:
    """An answer that is not a chat message (an ask response), by its ledger row, for whoever asked it (the
    member, or the API key); anyone else gets a 404, as for another org's row."""
    from saas.llm.models import LLMCall

    calls = LLMCall.objects.for_org(org).filter(pk=call_id, status=LLMCall.Status.OK)
    calls = calls.filter(user=user) if user is not None else calls.filter(api_key=api_key)
    call = calls.first()
    if call is None and ledger.catch_up():  # an API answer's row may still wait in the ledger stream
        call = calls.first()
    if call is None:
        raise NotFound("No such answer.")
    return call


def response_feedback_give(
    *, org: Any, call_id: Any, rating: int, comment: str, user: Any = None, api_key: Any = None
) -> Feedback:
    call = response_get(org=org, call_id=call_id, user=user, api_key=api_key)
    return _feedback_save(org=org, answer={"llm_call": call}, rating=rating, comment=comment, user=user,
                          api_key=api_key)  # fmt: skip


# --- Crews -------------------------------------------------------------------------------------------------


def crew_get(*, org: Any, crew_id: Any) -> Crew:
    crew = Crew.objects.for_org(org).filter(pk=crew_id).first()
    if crew is None:
        raise NotFound("No such crew.")
    return crew


def crew_spec(crew: Crew) -> dict[str, Any]:
    """The crew as one definition document (the API's shape; what a run keeps)."""
    org = crew.organization
    agents = list(Agent.objects.for_org(org).filter(crew=crew).order_by("position"))
    roles = {agent.pk: agent.role for agent in agents}
    tasks = Task.objects.for_org(org).filter(crew=crew).order_by("position")
    return {
        "name": crew.name, "description": crew.description, "process": crew.process,
        "default_model": crew.default_model,
        "budget_usd": str(crew.budget_usd) if crew.budget_usd is not None else None,
        "schedule": {"cron": crew.schedule_cron, "inputs": crew.schedule_inputs, "enabled": crew.schedule_enabled},
        "agents": [
            {"role": a.role, "goal": a.goal, "instructions": a.instructions, "model": a.model, "tools": a.tools,
             "max_iterations": a.max_iterations}
            for a in agents
        ],
        "tasks": [
            {"name": t.name, "description": t.description, "expected_output": t.expected_output,
             "agent": roles.get(t.agent_id, "") if t.agent_id else "", "context": t.context,
             "output_format": t.output_format, "output_schema": t.output_schema}
            for t in tasks
        ],
    }  # fmt: skip


def next_schedule_slot(cron: str, after: datetime) -> datetime:
    return croniter(cron, after).get_next(datetime)


def _save_definition(crew: Crew, spec: dict[str, Any], *, reschedule: bool) -> None:
    org = crew.organization
    schedule = spec.get("schedule") or {}
    crew.name, crew.description, crew.process = spec["name"], spec.get("description", ""), spec["process"]
    crew.default_model = spec["default_model"]
    budget = spec.get("budget_usd")
    crew.budget_usd = Decimal(str(budget)) if budget is not None else None
    crew.schedule_cron = schedule.get("cron") or ""
    crew.schedule_inputs = schedule.get("inputs") or {}
    enabled = bool(schedule.get("enabled"))
    if enabled and (reschedule or not crew.schedule_enabled or crew.next_run_at is None):
        crew.next_run_at = next_schedule_slot(crew.schedule_cron, timezone.now())
    crew.schedule_enabled = enabled
    if not enabled:
        crew.next_run_at = None
    crew.save()
    Task.objects.for_org(org).filter(crew=crew).delete()
    Agent.objects.for_org(org).filter(crew=crew).delete()
    agents = Agent.objects.for_org(org).bulk_create([
        Agent(organization=org, crew=crew, role=a["role"].strip(), goal=a["goal"], position=i,
              instructions=a.get("instructions", ""), model=a.get("model") or "", tools=list(a.get("tools") or []),
              max_iterations=a.get("max_iterations") or 5)
        for i, a in enumerate(spec["agents"])
    ])  # fmt: skip
    by_role = {agent.role: agent for agent in agents}
    Task.objects.for_org(org).bulk_create([
        Task(organization=org, crew=crew, name=t["name"], description=t["description"],
             expected_output=t.get("expected_output", ""), agent=by_role.get(t.get("agent") or ""), position=i,
             context=list(t.get("context") or []), output_format=t.get("output_format") or "text",
             output_schema=t.get("output_schema"))
        for i, t in enumerate(spec["tasks"])
    ])  # fmt: skip


@transaction.atomic
def crew_create(*, principal: Any, spec: dict[str, Any], template: str = "") -> Crew:
    org = principal.organization
    spec = definitions.check(org=org, spec=spec)
    crew = Crew(organization=org, created_by=principal.user, template=template)
    _save_definition(crew, spec, reschedule=True)
    audit_record(org=org, action="crew.create", principal=principal, target=crew)
    return crew


@transaction.atomic
def crew_update(*, principal: Any, crew_id: Any, spec: dict[str, Any]) -> Crew:
    org = principal.organization
    crew = Crew.objects.for_org(org).select_for_update().filter(pk=crew_id).first()
    if crew is None:
        raise NotFound("No such crew.")
    spec = definitions.check(org=org, spec=spec)
    cron_changed = (spec.get("schedule") or {}).get("cron", "") != crew.schedule_cron
    _save_definition(crew, spec, reschedule=cron_changed)
    audit_record(org=org, action="crew.update", principal=principal, target=crew)
    return crew


@transaction.atomic
def crew_delete(*, principal: Any, crew_id: Any) -> None:
    org = principal.organization
    crew = Crew.objects.for_org(org).select_for_update().filter(pk=crew_id).first()
    if crew is None:
        raise NotFound("No such crew.")
    if Run.objects.for_org(org).filter(crew=crew, status__in=[Run.Status.QUEUED, Run.Status.RUNNING]).exists():
        raise Conflict("This crew has runs in progress: cancel them first.", code="runs_in_progress")
    audit_record(org=org, action="crew.delete", principal=principal, target=crew)
    crew.delete()


def crew_from_starter(*, principal: Any, starter: str) -> Crew:
    spec = starters.STARTERS.get(starter)
    if spec is None:
        raise NotFound(f"No ready-made crew is called {starter!r}.")
    return crew_create(principal=principal, spec=starters.for_org(spec), template=starter)


@transaction.atomic
def conversations_purge(*, org_id: Any, older_than: datetime, batch_size: int) -> int:
    """Retention: conversations without activity since the cutoff go, with their messages and the feedback on
    them (the ledger rows of their calls stay, see saas.llm.retention)."""
    stale = Conversation.objects.for_org(org_id).filter(updated_at__lt=older_than).order_by("updated_at")
    batch = list(stale.values_list("pk", flat=True)[:batch_size])
    Conversation.objects.for_org(org_id).filter(pk__in=batch).delete()
    return len(batch)
