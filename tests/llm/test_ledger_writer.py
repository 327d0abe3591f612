"""The durable ledger writer (saas/llm/ledger.py): rows handed to the Redis stream are written in batches, once
each, whatever happens to the writer: it dies after committing but before acknowledging, it fails in the middle
of a batch, or its process is killed inside a batch's transaction. Every row is found, none twice, and each
charge is counted once. Each row here carries its API call's trace (as /v1/chat/completions hands them over),
which the writer writes in the row's transaction: every trace is found with its row, none twice."""

import pytest

from billing.models import UsageEvent
from saas.core.redis import get_redis
from saas.llm import gateway, ledger, tracing
from saas.llm.models import LLMCall, Span, Trace
from saas.llm.providers import ChatRequest
from tests.conftest import run_python, subprocess_env


@pytest.fixture
def batched(settings):
    settings.LLM_LEDGER = {**settings.LLM_LEDGER, "batched": True}
    redis = get_redis()
    redis.delete(ledger.STREAM, ledger.DEAD)
    yield
    redis.delete(ledger.STREAM, ledger.DEAD)


def _calls(caller, n: int) -> list[str]:
    """n answered API calls whose rows wait in the stream."""
    ids = []
    trace = tracing.for_caller(caller, "completion", "Chat completion", ends_with_call=True)
    for i in range(n):
        request = ChatRequest(messages=[{"role": "user", "content": f"Question number {i}"}])
        with tracing.trace(defer=True, **trace):
            ids.append(gateway.chat(caller=caller, model="test-small", request=request, defer_records=True).call_id)
    assert ledger.pending() == n and not LLMCall.all_orgs.exists() and not Trace.all_orgs.exists()
    return ids


def _traced(org) -> set[str]:
    """The calls whose trace was written, each with one span (its model call) pointing at its row."""
    spans = Span.all_orgs.filter(organization=org, trace__organization=org)
    assert spans.count() == Trace.all_orgs.filter(organization=org).count()
    return {str(s.llm_call_id) for s in spans}


def _found(org) -> tuple[set[str], int]:
    return (
        {str(pk) for pk in LLMCall.all_orgs.filter(organization=org).values_list("pk", flat=True)},
        UsageEvent.all_orgs.filter(organization=org, kind="request").count(),
    )


@pytest.mark.django_db
def test_a_writer_that_dies_before_acknowledging_leaves_its_batch_to_the_next_one(
    fake, models, caller, batched, monkeypatch
):
    ids = _calls(caller, 5)
    redis = get_redis()

    def lost(*args, **kwargs):
        raise ConnectionError("the writer died after its commit")

    monkeypatch.setattr(type(redis), "xack", lost)
    with pytest.raises(ConnectionError):
        ledger.drain()
    monkeypatch.undo()
    assert _found(caller.org) == (set(ids), 5)  # committed, but still pending in the stream
    assert ledger.drain(claim_seconds=0) == 5  # taken over and written again: nothing doubles
    assert _found(caller.org) == (set(ids), 5) and ledger.pending() == 0
    assert _traced(caller.org) == set(ids)


@pytest.mark.django_db
def test_a_writer_failing_in_the_middle_of_a_batch_writes_nothing_of_it_and_the_next_writes_all(
    fake, models, caller, batched, monkeypatch
):
    ids = _calls(caller, 5)
    insert = ledger._insert_ignoring_conflicts

    def half(model, objects):
        insert(model, objects)
        if model is not LLMCall:
            raise RuntimeError("the writer stopped between the ledger rows and the usage rows")

    monkeypatch.setattr(ledger, "_insert_ignoring_conflicts", half)
    with pytest.raises(RuntimeError):
        ledger.drain(batch_size=3)
    monkeypatch.undo()
    assert _found(caller.org) == (set(), 0)  # the batch's transaction was rolled back whole
    assert _traced(caller.org) == set()
    ledger.drain(claim_seconds=0, batch_size=3)
    assert _found(caller.org) == (set(ids), 5) and ledger.pending() == 0
    assert _traced(caller.org) == set(ids)


@pytest.mark.django_db(transaction=True)
def test_a_writer_process_killed_mid_batch_loses_no_row(fake, models, caller, batched):
    ids = _calls(caller, 5)
    killed = run_python(
        "import os, django\n"
        "django.setup()\n"
        "from saas.llm import ledger\n"
        "insert, batches = ledger._insert_ignoring_conflicts, []\n"
        "def dying(model, objects):\n"
        "    insert(model, objects)\n"
        "    if model.__name__ == 'LLMCall':\n"
        "        batches.append(1)\n"
        "        if len(batches) == 2:\n"
        "            os._exit(9)  # killed inside the second batch's transaction\n"
        "ledger._insert_ignoring_conflicts = dying\n"
        "ledger.drain(batch_size=2)\n",
        subprocess_env(),
    )
    assert killed.returncode == 9, killed.stderr
    written, charged = _found(caller.org)
    assert len(written) == 2 and charged == 2  # the first batch; the second died with its transaction
    assert _traced(caller.org) == written
    ledger.drain(claim_seconds=0, batch_size=2)
    assert _found(caller.org) == (set(ids), 5) and ledger.pending() == 0
    assert _traced(caller.org) == set(ids)


@pytest.mark.django_db
def test_the_drain_task_writes_the_stream(fake, models, caller, batched):
    from saas.llm.tasks import drain_ledger

    ids = _calls(caller, 3)
    assert drain_ledger() == 3
    assert _found(caller.org) == (set(ids), 3)


@pytest.mark.django_db
def test_rows_of_an_org_erased_meanwhile_are_dropped_and_do_not_block_the_stream(fake, models, caller, batched):
    from tests.accounts.factories import OrganizationFactory

    other = gateway.Caller(org=OrganizationFactory(), feature="chat")
    _calls(other, 1)
    mine = gateway.chat(
        caller=caller, model="test-small", request=ChatRequest([{"role": "user", "content": "x"}]), defer_records=True
    )
    other.org.delete()
    ledger.drain(claim_seconds=0)
    assert _found(caller.org) == ({mine.call_id}, 1) and ledger.pending() == 0


@pytest.mark.django_db
def test_feedback_on_a_batched_answer_finds_its_row(fake, models, batched):
    from tests.accounts.conftest import issue_key, key_client
    from tests.accounts.factories import OrganizationFactory

    org = OrganizationFactory()
    client = key_client(issue_key(org, scopes=["read", "ask"]).secret)
    answer = client.post("/api/v1/generate", {"model": "test-small", "prompt": "Hello"}, format="json")
    assert answer.status_code == 200 and ledger.pending() == 1
    rated = client.post(f"/api/v1/responses/{answer.json()['id']}/feedback", {"rating": "up"}, format="json")
    assert rated.status_code in (200, 201), rated.content


@pytest.mark.django_db
def test_a_row_of_a_member_erased_meanwhile_keeps_no_prompt_or_answer(fake, models, batched):
    from tests.accounts.factories import OrganizationFactory, UserFactory

    member = UserFactory()
    caller = gateway.Caller(org=OrganizationFactory(), feature="chat", user=member)
    (call_id,) = _calls(caller, 1)
    member.delete()
    ledger.drain(claim_seconds=0)
    call = LLMCall.all_orgs.get(pk=call_id)
    assert call.user_id is None and call.input_encrypted == "" and call.output_encrypted == ""
    assert _traced(caller.org) == {call_id} and Trace.all_orgs.get(organization=caller.org).user_id is None


@pytest.mark.django_db
def test_erasing_a_member_from_a_team_pseudonymises_their_rows_still_in_the_stream(fake, models, batched):
    """The person stays (a member of another team), so the writer would keep their name on the row: the
    erasure writes what the stream holds before it pseudonymises."""
    from saas.core.privacy import Subject
    from saas.llm import privacy
    from tests.accounts.factories import OrganizationFactory, UserFactory

    member = UserFactory()
    caller = gateway.Caller(org=OrganizationFactory(), feature="chat", user=member)
    (call_id,) = _calls(caller, 1)
    subject = Subject(user_id=member.pk, org_id=caller.org.pk, pseudonym="someone", texts=(), transfer_content=False)
    while privacy.ledger_erase_user(subject=subject, batch_size=10):
        pass
    ledger.drain(claim_seconds=0)
    call = LLMCall.all_orgs.get(pk=call_id)
    assert (call.user_id, call.input_encrypted, call.output_encrypted) == (None, "", "")


@pytest.mark.django_db
def test_a_batched_stream_hands_its_row_to_the_stream(fake, models, caller, batched):
    items = list(gateway.chat_stream(caller=caller, model="test-small", request=ChatRequest(
        [{"role": "user", "content": "Stream it"}]), defer_records=True))  # fmt: skip
    end = items[-1]
    assert isinstance(end, gateway.GatewayStreamEnd) and ledger.pending() == 1 and not LLMCall.all_orgs.exists()
    ledger.drain(claim_seconds=0)
    assert _found(caller.org) == ({end.call_id}, 1)


@pytest.mark.django_db
def test_every_column_an_entry_carries_reaches_its_rows_as_given(fake, models, caller, batched):
    """The writer inserts the entries' JSON values straight (PostgreSQL reads each as its column's type): each
    column of the call, its charge, its trace and its span is what the entry said, a column not given is the
    model's default, and the timestamps are the call's own."""
    (call_id,) = _calls(caller, 1)
    (message,) = get_redis().xrange(ledger.STREAM)
    entry = ledger.Entry.decode(message[1]["entry"])
    ledger.drain(claim_seconds=0)
    written = [
        (LLMCall.all_orgs.get(pk=call_id), entry.call),
        (UsageEvent.all_orgs.get(llm_call_id=call_id), entry.usage),
        (Trace.all_orgs.get(pk=entry.trace["trace"]["id"]), entry.trace["trace"]),
        (Span.all_orgs.get(pk=entry.trace["spans"][0]["id"]), entry.trace["spans"][0]),
    ]
    for row, given in written:
        for field in type(row)._meta.concrete_fields:
            expected = field.to_python(given[field.attname]) if field.attname in given else field.get_default()
            assert getattr(row, field.attname) == expected, f"{type(row).__name__}.{field.attname}"
    call = written[0][0]
    assert call.attempts and call.attempts == entry.call["attempts"] and call.input_encrypted  # JSON and text kept
    assert call.created_at.isoformat() == entry.call["created_at"]
