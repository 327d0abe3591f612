"""Conversation titles. A conversation is titled from its first question at once (`title_from`), and once that
question is answered, a Celery task (agents.title_conversation) asks the gateway for a short title summarising
the exchange (feature "title": ledgered, billed and masked like every AI call). The summary replaces only a
title that came from the first question: a title its member chose is never overwritten, and when the gateway
cannot answer (no quota, no model, nothing usable) the first question's title stays.

The offline extractive engine cannot write a summary; given the question's questions and asked for the title
as structured output, it picks the one closest to them all: the honest extractive title.
"""

import json
import re
from typing import Any

from django.db import transaction

from agents import services
from agents.models import Conversation, Message
from saas.core.errors import ApplicationError
from saas.core.events import push_to_user
from saas.core.tenancy import org_scope
from saas.llm import gateway
from saas.llm.local_engine import ENGINE_LABEL as LOCAL_ENGINE
from saas.llm.local_engine import SENTENCE_END
from saas.llm.providers import ChatRequest

MAX_TITLE_CHARS = 60
EXCHANGE_CHARS = 2000  # of the question and of the answer, sent to the model
MARKDOWN_NOISE = re.compile(r"[`*_#>|~\[\]]+")
CITATION = re.compile(r"\s*\[\d{1,3}\]")
QUOTES = "\"'\u201c\u201d\u2018\u2019\u00ab\u00bb"
LABEL = re.compile(r"^(?:title|conversation title)\s*:\s*", re.IGNORECASE)
INSTRUCTIONS = (
    "Write a title for the conversation the user shows you: at most six words naming what it is about, in the "
    "language of the question. Reply with the title only: no quotes, no full stop, no Markdown."
)
SCHEMA = {  # the offline engine's request: the title is filled from the question's own sentences
    "type": "object",
    "properties": {"title": {"type": "string", "maxLength": 200, "description": "what the question is about"}},
    "required": ["title"],
    "additionalProperties": False,
}


def title_from(question: str) -> str:
    """A short title from the first question, the same every time: its first line without Markdown, cut at a
    word boundary."""
    return _short(question) or "New conversation"


def _short(text: str) -> str:
    """The first non-empty line of `text` without Markdown and citation markers, at most MAX_TITLE_CHARS."""
    lines = (" ".join(MARKDOWN_NOISE.sub(" ", CITATION.sub("", line)).split()) for line in text.splitlines())
    line = next((line for line in lines if line), "")
    if len(line) <= MAX_TITLE_CHARS:
        return line
    cut = line[: MAX_TITLE_CHARS - 1].rsplit(" ", 1)[0]
    return cut.rstrip(" ,.;:-") + "…"


def title_clean(reply: str) -> str:
    """The model's reply as a title ("" when nothing usable is left): the first line, without a "Title:"
    label, quotes, Markdown, citation markers or a final full stop."""
    line = next((line.strip() for line in reply.splitlines() if line.strip()), "")
    line = LABEL.sub("", line).strip().strip(QUOTES).strip().rstrip(".")
    return _short(line)


def title_summarise_later(
    *, conversation: Conversation, answer: Message, titles_from_question: bool | None = None
) -> bool:
    """After an answer: when it completed the first exchange of a conversation still titled from its question,
    the title task is queued (after the commit). Returns whether it was. `titles_from_question`: what the
    turn's start knew (services.Turn: the conversation was empty and took its title from this question), so
    nothing is read here; None (an answer started elsewhere): read. The task checks again before it titles
    (still titled from the question, exactly one question): a rename or a second tab's question meanwhile
    keeps it from titling."""
    org_id = conversation.organization_id
    if answer.status != Message.Status.COMPLETE:
        return False
    if titles_from_question is None:
        titles_from_question = _first_exchange(org_id, conversation.pk)
    if not titles_from_question:
        return False
    from agents.tasks import title_conversation  # (tasks build on the services)

    transaction.on_commit(lambda: title_conversation.delay(str(org_id), str(conversation.pk), str(answer.pk)))
    return True


def _first_exchange(org_id: Any, conversation_id: Any) -> bool:
    """Whether the conversation is still titled from its question and has exactly one question."""
    titled = Conversation.objects.for_org(org_id).filter(pk=conversation_id)
    if not titled.filter(title_source=Conversation.TitleSource.QUESTION).exists():
        return False
    return _one_question(org_id, conversation_id)


def _one_question(org_id: Any, conversation_id: Any) -> bool:
    asked = Message.objects.for_org(org_id).filter(conversation_id=conversation_id, role=Message.Role.USER)
    return len(asked.values_list("pk", flat=True)[:2]) == 1


def _request(question: str, answer: Message) -> ChatRequest:
    if answer.engine == LOCAL_ENGINE:
        # Its questions only (a greeting or a thank-you around them is not what it is about): the engine picks
        # the one closest to them all.
        pieces = SENTENCE_END.split(" ".join(question[:EXCHANGE_CHARS].split()))
        asked = " ".join(p for p in pieces if p.endswith("?")) or " ".join(pieces)
        format_ = {"type": "json_schema", "json_schema": {"name": "conversation_title", "schema": SCHEMA}}
        return ChatRequest([{"role": "user", "content": asked}], response_format=format_)
    exchange = f"Question:\n{question[:EXCHANGE_CHARS]}\n\nAnswer:\n{services.message_text(answer)[:EXCHANGE_CHARS]}"
    return ChatRequest([{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": exchange}],
                       max_tokens=24, temperature=0.2)  # fmt: skip


def _reply(result: gateway.GatewayResult, request: ChatRequest) -> str:
    if request.response_format is None:
        return result.text
    try:
        value = json.loads(result.text)
    except ValueError:
        return ""
    return str(value.get("title") or "") if isinstance(value, dict) else ""


def conversation_title_summarise(*, org_id: Any, conversation_id: Any, answer_id: Any) -> str | None:
    """The title task's work: ask the gateway for a title of the first exchange and keep it, unless the
    conversation was renamed, deleted or its first exchange replaced meanwhile. Returns the new title."""
    with org_scope(org_id):
        conversation = Conversation.objects.for_org(org_id).select_related("organization", "user").filter(
            pk=conversation_id, title_source=Conversation.TitleSource.QUESTION
        ).first()  # fmt: skip
        answer = Message.objects.for_org(org_id).filter(
            pk=answer_id, conversation_id=conversation_id, role=Message.Role.ASSISTANT, status=Message.Status.COMPLETE
        ).first()  # fmt: skip
        question = (
            Message.objects.for_org(org_id)
            .filter(conversation_id=conversation_id, role=Message.Role.USER)
            .order_by("created_at")
            .first()
        )
        if conversation is None or answer is None or question is None:
            return None
        if not _one_question(org_id, conversation_id):
            return None  # a second question (another tab) before the first was answered: no single first exchange
        request = _request(services.message_text(question), answer)
        caller = gateway.Caller(org=conversation.organization, feature="title", user=conversation.user)
        try:
            result = gateway.chat(caller=caller, model=answer.model or conversation.model, request=request)
        except ApplicationError:
            return None  # no quota, no model, a refusal: the first question's title stays (the ledger says why)
        title = title_clean(_reply(result, request))
        if not title:
            return None
        with transaction.atomic():
            current = Conversation.objects.for_org(org_id).select_for_update().filter(pk=conversation_id).first()
            if current is None or current.title_source != Conversation.TitleSource.QUESTION:
                return None  # renamed (or deleted) while the model was writing
            if not Message.objects.for_org(org_id).filter(pk=answer_id).exists():
                return None  # the first exchange was replaced: its own answer will title it
            if not _one_question(org_id, conversation_id):
                return None  # a second question arrived while the model was writing
            current.title = title
            current.title_source = Conversation.TitleSource.SUMMARY
            current.save(update_fields=["title_encrypted", "title_source"])  # not updated_at: the list keeps its order
            user_id = current.user_id
            transaction.on_commit(lambda: push_to_user(user_id, "conversation.titled", {
                "org": str(org_id), "conversation": str(conversation_id), "title": title,
            }))  # fmt: skip
        return title
