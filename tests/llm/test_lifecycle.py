"""One call, one ledger row, one charge, whatever fails under it: Redis stopped in the middle of a request,
the database refusing the ledger insert, both at once, a client that goes away before the first token; and
an org at its limit still gets the answers it already has in the cache."""

import pytest
from django.db import connection

from billing.catalogue import sync_plans
from billing.models import Plan, UsageEvent
from saas.core.redis import get_redis
from saas.llm import breaker, gateway, ledger, metrics
from saas.llm.models import LLMCall
from saas.llm.providers import ChatRequest, QuotaExceeded

pytestmark = pytest.mark.django_db

HELLO = ChatRequest(messages=[{"role": "user", "content": "Hello there"}])


def _ask(text: str) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}])


def _rows(org) -> tuple[int, int]:
    """(ledger rows, charged requests) of an org."""
    return (
        LLMCall.all_orgs.filter(organization=org).count(),
        UsageEvent.all_orgs.filter(organization=org, kind="request").count(),
    )


@pytest.fixture
def allowance(db):
    """The Free plan with 3 requests a period."""
    sync_plans(Plan)
    Plan.objects.filter(slug="free").update(included_requests=3)
    for key in get_redis().scan_iter("crewdesk:quota:*"):
        get_redis().delete(key)
    return 3


@pytest.fixture
def refusing_ledger():
    """Make PostgreSQL refuse every LLMCall insert (a trigger), until the test drops it."""

    def on() -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE OR REPLACE FUNCTION refuse_llm_call() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN RAISE EXCEPTION 'ledger insert refused for the test'; END $$"
            )
            cursor.execute(
                "CREATE TRIGGER refuse_llm_call BEFORE INSERT ON llm_llmcall "
                "FOR EACH ROW EXECUTE FUNCTION refuse_llm_call()"
            )

    def off() -> None:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER IF EXISTS refuse_llm_call ON llm_llmcall")

    yield on, off
    off()


def test_redis_stopped_mid_stream_still_gives_the_answer_one_row_and_one_charge(
    fake, models, caller, allowance, restartable_redis
):
    fake.script("fake-small", {"hold_after": 1})
    before = metrics.STORE_ERRORS.labels("redis", "breaker")._value.get()
    stream = gateway.chat_stream(caller=caller, model="test-small", request=HELLO)
    first = next(stream)  # the quota place and the breaker's leave were taken with Redis up
    restartable_redis.stop()
    fake.release()
    rest = list(stream)
    end = rest[-1]
    assert isinstance(end, gateway.GatewayStreamEnd) and isinstance(first, str)
    assert first + "".join(rest[:-1]) == end.text
    (call,) = LLMCall.all_orgs.filter(organization=caller.org)
    assert call.status == "ok" and str(call.pk) == end.call_id and call.cost_usd == end.cost_usd
    assert _rows(caller.org) == (1, 1)

    # While Redis is down: the breaker (once its trusted clean reading has lapsed) fails open (counted), the
    # quota is counted in PostgreSQL.
    breaker.forget_local()
    answered = gateway.chat(caller=caller, model="test-small", request=_ask("Second question"))
    assert answered.text and _rows(caller.org) == (2, 2)
    assert metrics.STORE_ERRORS.labels("redis", "breaker")._value.get() > before
    gateway.chat(caller=caller, model="test-small", request=_ask("Third question"))
    assert _rows(caller.org) == (3, 3)
    with pytest.raises(QuotaExceeded):  # the allowance holds without Redis
        gateway.chat(caller=caller, model="test-small", request=_ask("Fourth question"))
    assert _rows(caller.org) == (4, 3)  # the refusal has its row and no charge

    restartable_redis.start()
    with pytest.raises(QuotaExceeded):  # back on Redis, seeded from the ledger: still at the limit
        gateway.chat(caller=caller, model="test-small", request=_ask("Fifth question"))
    assert _rows(caller.org) == (5, 3)


def test_a_ledger_insert_the_database_refuses_goes_through_the_stream_and_is_written_once(
    fake, models, caller, allowance, refusing_ledger
):
    refuse, allow = refusing_ledger
    get_redis().delete(ledger.STREAM)
    refuse()
    result = gateway.chat(caller=caller, model="test-small", request=HELLO)
    assert result.text.startswith("The quick")  # the answer is delivered
    assert _rows(caller.org) == (0, 0) and ledger.pending() == 1
    allow()
    assert ledger.drain(claim_seconds=0) == 1
    assert _rows(caller.org) == (1, 1)
    call = LLMCall.all_orgs.get(pk=result.call_id)
    assert call.status == "ok" and call.cost_usd == result.cost_usd
    # The same entry delivered again (a writer that died before acknowledging): no second row, no second charge.
    row = _row_of(call)
    charge = UsageEvent.all_orgs.get(llm_call=call)
    usage = ledger.usage_row(call=row, kind="request", period_start=charge.period_start)
    get_redis().xadd(ledger.STREAM, {"entry": ledger.Entry(row, usage).encode()})
    ledger.drain(claim_seconds=0)
    assert _rows(caller.org) == (1, 1) and ledger.pending() == 0


def _row_of(call: LLMCall) -> dict:
    return {f.attname: getattr(call, f.attname) for f in LLMCall._meta.concrete_fields}


def test_with_the_database_refusing_and_redis_down_the_answer_is_withheld_and_nothing_charged(
    fake, models, caller, allowance, refusing_ledger, restartable_redis
):
    refuse, allow = refusing_ledger
    restartable_redis.stop()
    refuse()
    with pytest.raises(ledger.LedgerUnavailable) as refused:
        gateway.chat(caller=caller, model="test-small", request=HELLO)
    assert refused.value.status == 503 and refused.value.code == "service_unavailable"
    allow()
    assert _rows(caller.org) == (0, 0)
    restartable_redis.start()
    gateway.chat(caller=caller, model="test-small", request=_ask("Once more"))
    assert _rows(caller.org) == (1, 1)


def test_an_org_at_its_limit_still_gets_its_cached_answers(fake, models, caller, allowance):
    for n in range(3):
        gateway.chat(caller=caller, model="test-small", request=_ask(f"Question {n}"))
    again = gateway.chat(caller=caller, model="test-small", request=_ask("Question 1"))
    assert again.cached and again.text.startswith("The quick")
    with pytest.raises(QuotaExceeded):
        gateway.chat(caller=caller, model="test-small", request=_ask("A new question"))
    assert _rows(caller.org) == (5, 3)
    assert UsageEvent.all_orgs.filter(organization=caller.org, kind="cache_hit").count() == 1
    hit = LLMCall.all_orgs.get(pk=again.call_id)
    assert hit.cache == "exact" and hit.status == "ok" and hit.cost_usd == 0


def test_a_stream_closed_before_its_first_item_is_recorded_as_cancelled(fake, models, caller, allowance):
    stream = gateway.chat_stream(caller=caller, model="test-small", request=HELLO)
    stream.close()
    (call,) = LLMCall.all_orgs.filter(organization=caller.org)
    assert call.status == "cancelled" and call.error_class == "cancelled"
    assert _rows(caller.org) == (1, 0) and fake.requests() == []  # nothing was sent, nothing charged


def test_a_stream_stopped_midway_is_recorded_once_and_charged_once(fake, models, caller, allowance):
    fake.script("fake-small", {"hold_after": 2})
    stream = gateway.chat_stream(caller=caller, model="test-small", request=HELLO)
    next(stream)
    stream.close()
    fake.release()
    (call,) = LLMCall.all_orgs.filter(organization=caller.org)
    assert call.status == "cancelled" and call.completion_tokens >= 1
    assert _rows(caller.org) == (1, 1)


def test_an_api_call_whose_stream_redis_cannot_take_is_written_at_once(
    fake, models, caller, allowance, restartable_redis, settings
):
    settings.LLM_LEDGER = {**settings.LLM_LEDGER, "batched": True}
    restartable_redis.stop()
    result = gateway.chat(caller=caller, model="test-small", request=HELLO, defer_records=True)
    assert result.record is not None
    result.record()  # the cache entries: Redis is down, they are skipped without failing
    call = LLMCall.all_orgs.get(pk=result.call_id)
    assert call.status == "ok" and _rows(caller.org) == (1, 1)
