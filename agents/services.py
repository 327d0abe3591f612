"""Chat: conversations, their messages, the streamed answer, feedback."""

from collections.abc import Callable, Generator
from typing import Any

from django.db import transaction

from agents.models import Conversation, Feedback, Message
from saas.core.errors import ApplicationError, NotFound
from saas.llm import crypto, gateway
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


@transaction.atomic
def chat_turn_start(*, conversation: Conversation, question: str, model: str) -> tuple[Message, Message]:
    """Saves the question and an empty assistant message that the stream will fill."""
    question = question.strip()
    if not question or len(question) > MAX_QUESTION_CHARS:
        raise ApplicationError(f"A question is 1 to {MAX_QUESTION_CHARS} characters.", code="invalid")
    org = conversation.organization
    messages = Message.objects.for_org(org)
    asked = messages.create(
        organization=org, conversation=conversation, role=Message.Role.USER, content_encrypted=crypto.encrypt(question)
    )
    answer = messages.create(
        organization=org, conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING,
        model=model,
    )  # fmt: skip
    fields = ["updated_at", "model"]
    conversation.model = model[:64] or "auto"
    if not conversation.title:
        conversation.title = question[:80]
        fields.append("title")
    conversation.save(update_fields=fields)
    return asked, answer


def chat_history(*, conversation: Conversation, before: Message) -> list[dict[str, str]]:
    messages = (
        Message.objects.for_org(conversation.organization)
        .filter(conversation=conversation, created_at__lt=before.created_at)
        .exclude(status=Message.Status.ERROR)
        .order_by("-created_at")[:HISTORY_MESSAGES]
    )
    return [{"role": m.role, "content": message_text(m)} for m in reversed(list(messages)) if message_text(m)]


def chat_answer_stream(
    *, conversation: Conversation, answer: Message, caller: gateway.Caller, should_stop: Callable[[], bool]
) -> Generator[dict[str, Any], None, None]:
    """Runs the gateway stream for `answer` and yields events for the browser; saves the outcome, whatever
    it is. `should_stop` is checked between tokens: a stop closes the upstream stream (the gateway records
    the call as cancelled) and keeps what had arrived."""
    history = chat_history(conversation=conversation, before=answer)
    parts: list[str] = []
    stream = None
    try:
        stream = gateway.chat_stream(caller=caller, model=answer.model or "auto", request=ChatRequest(history))
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
    fields = ["content_encrypted", "status", "error", "updated_at"]
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
    call = calls.filter(user=user).first() if user is not None else calls.filter(api_key=api_key).first()
    if call is None:
        raise NotFound("No such answer.")
    return call


def response_feedback_give(
    *, org: Any, call_id: Any, rating: int, comment: str, user: Any = None, api_key: Any = None
) -> Feedback:
    call = response_get(org=org, call_id=call_id, user=user, api_key=api_key)
    return _feedback_save(org=org, answer={"llm_call": call}, rating=rating, comment=comment, user=user,
                          api_key=api_key)  # fmt: skip
