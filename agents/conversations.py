"""The chat workspace: conversations, the collections they draw on, their pins and search (titles are
agents/titles.py's), and the answer stream (grounded in the picked collections through documents' Ask: the
same retrieval, the same citations, with the conversation's earlier turns in context).

The message rows and the plain (ungrounded) stream are agents/services.py's; this module adds what the
workspace needs on top of them. Everything takes the org and the person, and another org's or another
person's conversation or collection is a NotFound (a 404).
"""

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable, Generator, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from agents import selectors, services, titles
from agents.models import Conversation, Feedback, Message
from documents import services as documents
from documents.models import Collection, Document
from saas.core import threads
from saas.core.errors import ApplicationError, NotFound
from saas.core.markdown import render_markdown
from saas.llm import gateway, gateway_async, tracing
from saas.llm.providers import ChatRequest, LLMError

MAX_COLLECTIONS = 20
LOCAL_UPSTREAM = "local"
CITE_MARKER = re.compile(r"\[(\d{1,3})\]")


# --- Conversations -----------------------------------------------------------------------------------------


def collections_resolve(*, org: Any, collection_ids: Iterable[Any]) -> list[Collection]:
    """The org's collections by id, each once; an unknown id (or another org's) is a NotFound."""
    wanted: list[uuid.UUID] = []
    for value in collection_ids:
        try:
            parsed = value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
        except ValueError:
            raise NotFound("No such collection.", code="collection_not_found") from None
        if parsed not in wanted:
            wanted.append(parsed)
    if len(wanted) > MAX_COLLECTIONS:
        raise ApplicationError(f"A conversation uses at most {MAX_COLLECTIONS} collections.", code="invalid")
    found = {c.pk: c for c in Collection.objects.for_org(org).filter(pk__in=wanted)}
    if len(found) != len(wanted):
        raise NotFound("No such collection.", code="collection_not_found")
    return [found[pk] for pk in wanted]


@transaction.atomic
def conversation_start(*, org: Any, user: Any, collection_ids: Iterable[Any] = (), model: str = "auto") -> Conversation:
    collections = collections_resolve(org=org, collection_ids=collection_ids)
    conversation = services.conversation_create(org=org, user=user, model=model)
    conversation.collections.set(collections)
    return conversation


@transaction.atomic
def conversation_update(
    *, conversation: Conversation, title: str | None = None, pinned: bool | None = None,
    collection_ids: Iterable[Any] | None = None,
) -> Conversation:  # fmt: skip
    """Rename, pin or unpin, or pick the collections; all checked before anything is written."""
    fields = []
    collections = None
    if collection_ids is not None:
        collections = collections_resolve(org=conversation.organization_id, collection_ids=collection_ids)
    if title is not None:
        title = " ".join(title.split())
        if not title or len(title) > 120:
            raise ApplicationError("A title is 1 to 120 characters.", code="invalid")
        conversation.title = title
        conversation.title_source = Conversation.TitleSource.USER  # never replaced by a summary
        fields += ["title_encrypted", "title_source"]
    if pinned is not None:
        conversation.pinned = bool(pinned)
        fields.append("pinned")
    if collections is not None:
        conversation.collections.set(collections)
    conversation.save(update_fields=[*fields, "updated_at"])
    return conversation


def conversation_delete(*, conversation: Conversation) -> None:
    conversation.delete()  # its messages and their feedback go with it


def conversation_list(*, org: Any, user: Any, query: str = "", limit: int = 200) -> list[Conversation]:
    """The person's conversations, pinned first, then the most recent. Titles are encrypted at rest, so the
    search reads them here: over the person's latest 1,000 conversations, which is all of them for most."""
    rows = Conversation.objects.for_org(org).filter(user=user).order_by("-pinned", "-updated_at")
    words = query.lower().split()
    if not words:
        return list(rows[:limit])
    found = []
    for conversation in rows[:1000]:
        title = str(conversation).lower()
        if all(word in title for word in words):
            found.append(conversation)
            if len(found) == limit:
                break
    return found


@transaction.atomic
def turn_replace(*, conversation: Conversation, message_id: Any) -> str:
    """For regenerate and edit-and-resend: the question `message_id` and everything after it are removed
    (the answers' ledger rows stay); returns the removed question."""
    messages = Message.objects.for_org(conversation.organization_id).filter(conversation=conversation)
    question = messages.filter(pk=message_id, role=Message.Role.USER).first()
    if question is None:
        raise NotFound("No such question in this conversation.")
    text = services.message_text(question)
    messages.filter(created_at__gte=question.created_at).delete()
    return text


# --- Answers -----------------------------------------------------------------------------------------------


def answers_locally(*, org: Any, model: str) -> bool:
    """Whether the offline extractive engine would answer: it only quotes what it is given, so a chat with it
    must be given the team's documents."""
    from saas.llm import config as gateway_config
    from saas.llm import policy

    try:
        config, _ = policy.resolve_model(
            org=org, feature="chat", alias=model or "auto", request=ChatRequest([{"role": "user", "content": "?"}]),
            conf=gateway_config.current(),
        )  # fmt: skip
    except ApplicationError:
        return False  # the answer itself will say why no model can answer
    return bool(config.upstream == LOCAL_UPSTREAM)


def grounding(conversation: Conversation, *, picks: bool = True) -> tuple[list[Collection] | None, bool]:
    """What the answers draw on: the picked collections; with none picked, all the team's documents when the
    offline engine answers (quoting nothing would be a dead end), else the model alone (None). And whether
    the offline engine answers. `picks` False: known to have none picked (services.Turn), not read."""
    org = conversation.organization
    local = answers_locally(org=org, model=conversation.model)
    picked = list(conversation.collections.all()) if picks else []
    if picked:
        return picked, local
    if local and Document.objects.for_org(org).filter(status=Document.Status.READY).exists():
        return list(Collection.objects.for_org(org)), local
    return None, local


@tracing.traces("chat", "Chat turn", subject=lambda kwargs: kwargs["answer"].pk)
def answer_stream(
    *, conversation: Conversation, answer: Message, caller: gateway.Caller, should_stop: Callable[[], bool],
    titles_from_question: bool | None = None,
) -> Generator[dict[str, Any], None, None]:  # fmt: skip
    """The answer's events for the browser: "delta" {text} as it is written, then one "done" carrying the
    server-rendered, sanitised HTML of the whole turn (or "error"). The outcome is saved whatever it is.
    `titles_from_question`: services.Turn's (None: titles.title_summarise_later reads it)."""
    collections, local = grounding(conversation)
    if collections is None:
        events = services.chat_answer_stream(conversation=conversation, answer=answer, caller=caller,
                                             should_stop=should_stop)  # fmt: skip
    else:  # an answer from the team's documents is an Ask, in the ledger too (usage per feature, the checklist)
        events = _grounded(conversation=conversation, answer=answer, caller=replace(caller, feature="ask"),
                           should_stop=should_stop, collections=collections, local=local)  # fmt: skip
    try:
        for event in events:
            if event["type"] in ("done", "error"):
                answer.refresh_from_db()
                event = {**event, "html": turn_html(answer, user=caller.user)}
                titles.title_summarise_later(conversation=conversation, answer=answer,
                                             titles_from_question=titles_from_question)  # fmt: skip
            yield event
    finally:
        events.close()


# --- The answer on the event loop --------------------------------------------------------------------------


@dataclass
class Admitted:
    """An ungrounded answer whose call was admitted (saas/llm/gateway_async.admit): it streams on the event
    loop (`answer_relay`), holding no thread while it waits on the model."""

    conversation: Conversation
    answer: Message
    caller: gateway.Caller
    pending: gateway_async.Pending
    recorder: tracing.Recorder | None
    titles_from_question: bool | None = None


def answer_admit(
    *, conversation: Conversation, answer: Message, caller: gateway.Caller,
    turn: services.Turn | None = None,
) -> Admitted | dict[str, Any] | None:  # fmt: skip
    """The synchronous steps before the model (in a worker thread, in the org's scope): the request, then the
    gateway's admission (policy, guardrails, PII, caches, a quota place). None: the answer draws on documents
    (retrieval is synchronous: `answer_stream` in a thread of the stream pool). A dict: the "error" event of
    a call refused before it started, its outcome saved as `answer_stream` saves it. `turn`: what the turn's
    start read (the earlier turns, the title decision), not read again.

    The turn's trace ends with its model call (`ends_with_call`): its rows are written with the call's ledger
    row, in the same transaction, instead of a transaction of their own after the answer."""
    collections, _ = grounding(conversation, picks=turn.picks_collections if turn is not None else True)
    if collections is not None:
        return None
    titles_from_question = turn.titles_from_question if turn is not None else None
    history = turn.history if turn is not None else None
    recorder = tracing.start(**tracing.for_caller(caller, "chat", "Chat turn", subject_id=str(answer.pk),
                                                  ends_with_call=True))  # fmt: skip
    try:
        with recorder.active() if recorder is not None else nullcontext():
            model, request, prompt = services.chat_request(conversation=conversation, answer=answer, caller=caller,
                                                           history=history)  # fmt: skip
            # Its ledger row (and the turn's trace) through the ledger stream, written by the ledger writer in
            # batches: the message links to the row's id (Message.llm_call has no database constraint).
            pending = gateway_async.admit(caller=caller, model=model, request=request, stream=True, prompt=prompt)
    except LLMError as error:
        return _answer_end(conversation, answer, caller, recorder, "", Message.Status.ERROR, error=error,
                           titles_from_question=titles_from_question)  # fmt: skip
    return Admitted(conversation, answer, caller, pending, recorder, titles_from_question)


async def answer_relay(
    admitted: Admitted, *, should_stop: Callable[[], bool], send: Callable[[dict[str, Any]], Awaitable[None]]
) -> None:
    """Stream an admitted answer on the event loop: "delta" events as the model writes, then one "done" (or
    "error") carrying the turn's HTML, as `answer_stream` makes them. The deltas pass on the loop (no thread
    per open answer, no hop per token); so does the call's end (its row handed to the ledger stream), and
    the message's outcome takes one hop to the gateway's pool. `should_stop` is checked between tokens: a
    stop closes the upstream call, which the gateway records as cancelled, and keeps what had arrived; so
    does the task being cancelled. Tokens that arrived together (read from the model's buffered reply
    without waiting) go out in one "delta" frame."""
    a = admitted
    answer_id = str(a.answer.pk)
    org = a.conversation.organization
    parts: list[str] = []
    end: gateway.GatewayStreamEnd | None = None
    error: LLMError | None = None

    def ending(status: str, **outcome: Any) -> Awaitable[dict[str, Any]]:  # in one hop to the gateway's pool
        return threads.hop(gateway_async.in_org(org, _answer_end), a.conversation, a.answer, a.caller,
                           a.recorder, "".join(parts), status, titles_from_question=a.titles_from_question,
                           **outcome)  # fmt: skip

    with threads.own_threads(), a.recorder.active() if a.recorder is not None else nullcontext():
        stream = gateway_async.achat_stream(a.pending)
        deltas = _Deltas(send, answer_id)
        try:
            async for item in stream:
                if isinstance(item, gateway.GatewayStreamEnd):
                    end = item  # the last item: the stream ends after it
                    continue
                parts.append(item)
                deltas.add(item)
                if should_stop():
                    break
        except LLMError as exc:
            error = exc
        except asyncio.CancelledError:
            deltas.cancel()
            await asyncio.shield(stream.aclose())  # the call recorded as cancelled
            await asyncio.shield(ending(Message.Status.CANCELLED))
            raise
        finally:
            await stream.aclose()  # a stop (or a failure) closes the upstream call: recorded as cancelled
        status = Message.Status.ERROR if error else Message.Status.COMPLETE if end else Message.Status.CANCELLED
        event = await ending(status, end=end, error=error)  # the last deltas go out meanwhile
    await deltas.sent()
    await send(event)


class _Deltas:
    """An answer's deltas on their way to the socket: the first token goes out as soon as the relay waits on
    the model again, with every token that arrived meanwhile in the same frame. (Reading a reply the model's
    connection has buffered does not wait, so a burst of tokens is read before anything is sent: one frame
    instead of one per token, each of which cost a JSON encoding and a websocket write.)"""

    def __init__(self, send: Callable[[dict[str, Any]], Awaitable[None]], answer_id: str) -> None:
        self.send, self.answer_id = send, answer_id
        self.parts: list[str] = []
        self.sending: asyncio.Task[None] | None = None

    def add(self, text: str) -> None:
        self.parts.append(text)
        if self.sending is None:
            self.sending = asyncio.ensure_future(self._send())

    async def _send(self) -> None:
        try:
            while self.parts:  # tokens that arrived while the last frame was sent go in the next
                text = "".join(self.parts)
                self.parts.clear()
                await self.send({"type": "delta", "message": self.answer_id, "text": text})
        finally:
            self.sending = None

    async def sent(self) -> None:
        """Once every delta added so far has been sent."""
        while self.sending is not None:
            await self.sending

    def cancel(self) -> None:
        if self.sending is not None:
            self.sending.cancel()


def _answer_end(
    conversation: Conversation, answer: Message, caller: gateway.Caller, recorder: tracing.Recorder | None, text: str,
    status: str, *, end: gateway.GatewayStreamEnd | None = None, error: LLMError | None = None,
    titles_from_question: bool | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The answer's outcome saved (as services.chat_answer_stream saves it), its last event with the turn's
    HTML, the title summarised later, the turn's trace written."""
    answer_id = str(answer.pk)
    event: dict[str, Any]
    if error is not None:
        services._finish(answer, text, Message.Status.ERROR, error=error.message)
        event = {"type": "error", "message": answer_id, "error": {"code": error.kind, "message": error.message}}
    elif end is not None and status == Message.Status.COMPLETE:
        services._finish(answer, text, status, model=end.model, engine=end.engine, call_id=end.call_id)
        event = {"type": "done", "message": answer_id, "status": "complete", "model": end.model, "engine": end.engine}
    else:
        services._finish(answer, text, Message.Status.CANCELLED)
        event = {"type": "done", "message": answer_id, "status": "cancelled", "model": answer.model}
    try:
        # `answer` is the row just saved, and nobody has rated it yet: its turn renders without reading it again.
        turn = turn_context(answer, slug=conversation.organization.slug)
        event["html"] = render_to_string("agents/chat_turn.html", {"turn": turn})
        titles.title_summarise_later(conversation=conversation, answer=answer,
                                     titles_from_question=titles_from_question)  # fmt: skip
    finally:
        if recorder is not None:
            recorder.finish()
    return event


def _grounded(
    *, conversation: Conversation, answer: Message, caller: gateway.Caller, should_stop: Callable[[], bool],
    collections: list[Collection], local: bool,
) -> Generator[dict[str, Any], None, None]:  # fmt: skip
    """documents' Ask over the collections, the earlier turns in context (the offline engine, which only
    quotes its sources, is given the previous question for retrieval only)."""
    turns = services.chat_history(conversation=conversation, before=answer)
    question = turns[-1]["content"] if turns and turns[-1]["role"] == "user" else ""
    earlier = turns[:-1]
    history = [] if local else earlier
    follows = next((t["content"] for t in reversed(earlier) if t["role"] == "user"), "")
    parts: list[str] = []
    stream = None
    try:
        stream = documents.ask_stream(
            caller=caller, question=question, collection=collections, model=answer.model or "auto",
            should_stop=should_stop, history=history, follows_up=follows, max_chars=services.MAX_QUESTION_CHARS,
        )  # fmt: skip
        for event in stream:
            if event["type"] == "delta":
                parts.append(event["text"])
                yield {"type": "delta", "message": str(answer.pk), "text": event["text"]}
            elif event["type"] == "stopped":
                services._finish(answer, "".join(parts), Message.Status.CANCELLED)
                yield {"type": "done", "message": str(answer.pk), "status": "cancelled", "model": answer.model}
                return
            elif event["type"] == "done":
                answer.citations = event["citations"]
                answer.save(update_fields=["citations_encrypted"])
                services._finish(answer, event["answer"], Message.Status.COMPLETE, model=event["model"] or "",
                                 engine=event["engine"] or "", call_id=event["id"] or "")  # fmt: skip
                yield {"type": "done", "message": str(answer.pk), "status": "complete", "model": event["model"],
                       "engine": event["engine"], "citations": len(event["citations"])}  # fmt: skip
                return
    except ApplicationError as error:  # the gateway's LLMErrors, and a question Ask refuses
        services._finish(answer, "".join(parts), Message.Status.ERROR, error=error.message)
        yield {"type": "error", "message": str(answer.pk), "error": {"code": error.code, "message": error.message}}
    finally:
        if stream is not None:
            stream.close()


# --- Rendering ---------------------------------------------------------------------------------------------


def answer_html(text: str, citations: list[dict[str, Any]], anchor: str) -> SafeString:
    """The answer's Markdown rendered and sanitised (saas.core.markdown), its citation markers made links to
    the citations below it. Only digits and our own anchor are added to the sanitised HTML."""
    html = str(render_markdown(text)).strip()
    known = {str(c.get("marker")) for c in citations}
    if known:
        prefix = escape(anchor)
        html = CITE_MARKER.sub(
            lambda m: (
                f'<a class="cite" href="#{prefix}-{m.group(1)}">[{m.group(1)}]</a>'
                if m.group(1) in known
                else m.group(0)
            ),
            html,
        )
    return mark_safe(html)  # noqa: S308  (sanitised by render_markdown; the links hold only digits and a uuid)


def turn_context(message: Message, *, slug: str, rating: int | None = None, trace: str | None = None) -> dict[str, Any]:
    text = services.message_text(message)
    citations = message.citations if message.role == Message.Role.ASSISTANT else []
    for citation in citations:
        document = reverse("document-detail", args=[slug, citation["document_id"]])
        citation["url"] = f"{document}#chunk-{citation['chunk_id']}"
    return {
        "message": message, "text": text, "citations": citations, "rating": rating,
        "trace_url": reverse("trace-detail", args=[slug, trace]) if trace else "",
        "html": answer_html(text, citations, f"cite-{message.pk}") if message.role == Message.Role.ASSISTANT else "",
    }  # fmt: skip


def turn_html(message: Message, *, user: Any) -> str:
    """One turn as the page shows it (agents/chat_turn.html): what the live answer's bubble is replaced with."""
    message = Message.objects.for_org(message.organization_id).select_related("organization").get(pk=message.pk)
    slug = message.organization.slug
    rating = Feedback.objects.for_org(message.organization_id).filter(message=message, user=user).values_list(
        "rating", flat=True
    ).first()  # fmt: skip
    return render_to_string("agents/chat_turn.html", {"turn": turn_context(message, slug=slug, rating=rating)})


def turns(*, conversation: Conversation, user: Any, traced: bool = False) -> list[dict[str, Any]]:
    """`traced`: link each answer to its trace (for the admins who may read traces)."""
    org = conversation.organization
    messages = list(Message.objects.for_org(org).filter(conversation=conversation).order_by("created_at"))
    ratings = dict(
        Feedback.objects.for_org(org).filter(message__in=messages, user=user).values_list("message_id", "rating")
    )
    traces = selectors.answer_traces(org=org, messages=messages) if traced else {}
    return [turn_context(m, slug=org.slug, rating=ratings.get(m.pk), trace=traces.get(m.pk)) for m in messages]
