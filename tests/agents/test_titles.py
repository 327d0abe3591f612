"""Conversation titles: from the first question at once, then summarised from the first exchange through the
gateway (ledgered as feature "title"), never over a title the member chose, encrypted at rest."""

from unittest import mock

import pytest

from agents import conversations, services, titles
from agents.models import Conversation, Message
from saas.core.tenancy import org_scope
from saas.llm.models import LLMCall
from tests.accounts.factories import MembershipFactory
from tests.agents.test_conversations import _ask, _start, member, policies  # noqa: F401  (fixtures)
from tests.llm.conftest import fake, models  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)  # the gateway records its call on a connection of its own


def test_the_first_question_titles_at_once():
    assert titles.title_from("How long do **refunds** take?") == "How long do refunds take?"
    long = titles.title_from("Explain " + "the refund policy of the company " * 5)
    assert len(long) <= 60 and long.endswith("…") and " " in long
    assert titles.title_from("```\ncode\n```") == "code"
    assert titles.title_from("   ") == "New conversation"


def test_a_reply_is_cleaned_into_a_title():
    assert titles.title_clean('Title: "Refund timelines."\nMore text') == "Refund timelines"
    assert titles.title_clean("**Refund** policy [1]") == "Refund policy"
    assert titles.title_clean("“Travel expenses”") == "Travel expenses"
    assert titles.title_clean("\n\n") == ""
    assert len(titles.title_clean("word " * 40)) <= 60


def _queued(conversation, question, **kwargs):
    """Asks, and returns what the title task was queued with (or None)."""
    with mock.patch("agents.tasks.title_conversation.delay") as delay:
        events = _ask(conversation, question, **kwargs)
    assert events[-1]["type"] == "done", events
    return delay.call_args.args if delay.called else None


def test_the_offline_engine_titles_the_first_exchange_with_its_question(member, policies):  # noqa: F811
    conversation = _start(member, [policies])
    queued = _queued(conversation, "Hello, I have a question for you. How long do refunds take? Thanks a lot.")
    assert queued == (str(member.organization_id), str(conversation.pk), mock.ANY)
    conversation.refresh_from_db()
    assert conversation.title_source == "question" and conversation.title.startswith("Hello, I have a question")

    title = titles.conversation_title_summarise(org_id=queued[0], conversation_id=queued[1], answer_id=queued[2])
    assert title == "How long do refunds take?"
    conversation.refresh_from_db()
    assert conversation.title == title and conversation.title_source == "summary"
    assert "refunds" not in conversation.title_encrypted  # personal data: encrypted at rest
    call = LLMCall.all_orgs.get(organization=member.organization, feature="title")
    assert call.user_id == member.user_id and call.status == "ok"
    # A second answer does not ask again.
    assert _queued(conversation, "And is an email sent?") is None


def test_a_generative_model_summarises_and_a_rename_is_never_overwritten(fake, models, member, policies):  # noqa: F811
    with org_scope(member.organization):
        conversation = conversations.conversation_start(org=member.organization, user=member.user,
                                                        collection_ids=[policies.pk], model="test-small")  # fmt: skip
    fake.script("fake-small", {"reply": "Refunds take 30 days [1]."}, {"reply": '"Refund timelines."'})
    queued = _queued(conversation, "How long do refunds take?")
    assert queued is not None
    title = titles.conversation_title_summarise(org_id=queued[0], conversation_id=queued[1], answer_id=queued[2])
    assert title == "Refund timelines"
    sent = fake.requests()[-1]["body"]
    assert sent["messages"][0]["role"] == "system" and "Refunds take 30 days" in sent["messages"][1]["content"]

    # Renamed while the task waits: the summary is dropped, the member's title stays.
    with org_scope(member.organization):
        other = conversations.conversation_start(org=member.organization, user=member.user, model="test-small")
    fake.script("fake-small", {"reply": "Travel is reimbursed."}, {"reply": "Travel expenses"})
    queued = _queued(other, "What about travel?")
    with org_scope(member.organization):
        conversations.conversation_update(conversation=Conversation.all_orgs.get(pk=other.pk), title="Mine")
    assert titles.conversation_title_summarise(org_id=queued[0], conversation_id=queued[1], answer_id=queued[2]) is None
    other.refresh_from_db()
    assert other.title == "Mine" and other.title_source == "user"
    # Editing and resending the first question keeps the member's title too.
    first = Message.all_orgs.get(conversation=other, role="user")
    fake.script("fake-small", {"reply": "Trips are reimbursed."})
    assert _queued(other, "What about trips?", replace=first.pk) is None
    other.refresh_from_db()
    assert other.title == "Mine"


def test_when_the_gateway_cannot_answer_the_question_title_stays(fake, models, member, policies):  # noqa: F811
    with org_scope(member.organization):
        conversation = conversations.conversation_start(org=member.organization, user=member.user,
                                                        collection_ids=[policies.pk], model="test-small")  # fmt: skip
    fake.script("fake-small", {"reply": "Refunds take 30 days [1]."}, {"status": 400}, {"reply": '""'})
    queued = _queued(conversation, "How long do refunds take?")
    assert titles.conversation_title_summarise(org_id=queued[0], conversation_id=queued[1], answer_id=queued[2]) is None
    assert titles.conversation_title_summarise(org_id=queued[0], conversation_id=queued[1], answer_id=queued[2]) is None
    conversation.refresh_from_db()
    assert conversation.title == "How long do refunds take?" and conversation.title_source == "question"
    assert LLMCall.all_orgs.filter(organization=member.organization, feature="title").count() == 2


def test_the_task_does_nothing_for_a_replaced_answer_or_another_org(member, policies):  # noqa: F811
    conversation = _start(member, [policies])
    queued = _queued(conversation, "How long do refunds take?")
    stranger = _start(MembershipFactory(role="member"))
    assert titles.conversation_title_summarise(org_id=stranger.organization_id, conversation_id=queued[1],
                                               answer_id=queued[2]) is None  # fmt: skip
    with org_scope(member.organization):
        question = Message.all_orgs.get(conversation=conversation, role="user")
        conversations.turn_replace(conversation=conversation, message_id=question.pk)
    assert titles.conversation_title_summarise(org_id=queued[0], conversation_id=queued[1], answer_id=queued[2]) is None
    assert not LLMCall.all_orgs.filter(feature="title").exists()


def test_a_second_tab_asking_before_the_first_answer_keeps_the_question_title(fake, models, member):  # noqa: F811
    """The title decision is what the turn's start knew (the conversation was empty): no query at the answer's
    end. Two tabs asking at once each start on an empty conversation; the task checks again and titles only a
    conversation with exactly one question, so a race never titles twice nor over a chosen title."""
    with org_scope(member.organization):
        conversation = conversations.conversation_start(org=member.organization, user=member.user, model="test-small")
        first = services.chat_turn_begin(conversation=conversation, question="How long do refunds take?",
                                         model="test-small")  # fmt: skip
        # The other tab's conversation object was read before the first question: it sees no title yet.
        other_tab = Conversation.all_orgs.get(pk=conversation.pk)
        second = services.chat_turn_begin(conversation=other_tab, question="And travel?", model="test-small")
        services._finish(first.answer, "Refunds take 30 days.", Message.Status.COMPLETE, model="test-small",
                         engine="openai")  # fmt: skip
        assert first.titles_from_question and not second.titles_from_question
        with mock.patch("agents.tasks.title_conversation.delay") as delay:
            queued = titles.title_summarise_later(conversation=conversation, answer=first.answer,
                                                  titles_from_question=first.titles_from_question)  # fmt: skip
        assert queued and delay.call_args.args == (str(member.organization_id), str(conversation.pk),
                                                   str(first.answer.pk))  # fmt: skip
    fake.script("fake-small", {"reply": "Refund timelines"})  # what a summary would have been
    assert titles.conversation_title_summarise(org_id=member.organization_id, conversation_id=conversation.pk,
                                               answer_id=first.answer.pk) is None  # fmt: skip
    conversation.refresh_from_db()
    assert conversation.title == "How long do refunds take?" and conversation.title_source == "question"
    assert not LLMCall.all_orgs.filter(feature="title").exists()  # the model was not asked
    # The turn's start kept the first question's title ("started" shows it to both tabs).
    assert other_tab.title == "How long do refunds take?"


def test_a_turn_start_never_overwrites_a_title_chosen_in_another_tab(member):  # noqa: F811
    with org_scope(member.organization):
        conversation = conversations.conversation_start(org=member.organization, user=member.user)
        stale = Conversation.all_orgs.get(pk=conversation.pk)  # the socket's copy, read before the rename
        conversations.conversation_update(conversation=conversation, title="Mine")
        turn = services.chat_turn_begin(conversation=stale, question="How long do refunds take?", model="auto")
    assert not turn.titles_from_question
    assert stale.title == "Mine" and stale.title_source == "user"  # brought up to date by the turn's start
    conversation.refresh_from_db()
    assert conversation.title == "Mine" and conversation.title_source == "user"
