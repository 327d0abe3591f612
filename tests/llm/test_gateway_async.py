"""The gateway's async path (saas/llm/gateway_async.py, served under daphne by saas/llm/asgi.py): its own ways
to fail keep the promise of one call, one ledger row, one charge. The client going away is a cancelled task
(not a closed generator); Redis stopping mid-stream is met by asyncio Redis on the loop as well as by the hops.

Each test runs its coroutine with asgiref's async_to_sync, so the hops (thread_sensitive) run in the test's
thread, inside its transaction."""

import asyncio

import pytest
from asgiref.sync import async_to_sync

from billing.catalogue import sync_plans
from billing.models import Plan, UsageEvent
from saas.core import threads
from saas.core.redis import get_redis
from saas.llm import breaker, gateway, gateway_async, ledger
from saas.llm.models import LLMCall
from saas.llm.providers import ChatRequest

pytestmark = pytest.mark.django_db

HELLO = ChatRequest(messages=[{"role": "user", "content": "Hello there"}])


def _rows(org) -> tuple[int, int]:
    return (
        LLMCall.all_orgs.filter(organization=org).count(),
        UsageEvent.all_orgs.filter(organization=org, kind="request").count(),
    )


@pytest.fixture
def allowance(db):
    sync_plans(Plan)
    Plan.objects.filter(slug="free").update(included_requests=3)
    for key in get_redis().scan_iter("crewdesk:quota:*"):
        get_redis().delete(key)
    return 3


def _admit(caller, *, stream: bool, text: str = "Hello there", model: str = "test-small") -> gateway_async.Pending:
    request = ChatRequest(messages=[{"role": "user", "content": text}])
    return gateway_async.admit(caller=caller, model=model, request=request, bypass_cache=True, stream=stream)


def test_an_answer_on_the_async_path_has_one_row_and_one_charge(fake, models, caller, allowance):
    pending = _admit(caller, stream=False)
    result = async_to_sync(gateway_async.achat)(pending)
    assert result.text == "The quick brown fox jumps over the lazy dog."
    (call,) = LLMCall.all_orgs.filter(organization=caller.org)
    assert str(call.pk) == result.call_id and call.status == "ok" and call.cost_usd == result.cost_usd
    assert call.attempts[-1]["status"] == "ok" and _rows(caller.org) == (1, 1)


def test_a_client_going_away_mid_stream_cancels_the_upstream_and_writes_one_row(fake, models, caller, allowance):
    fake.script("fake-small", {"hold_after": 2})  # two tokens, then the upstream waits
    pending = _admit(caller, stream=True)

    async def reader_cancelled_mid_stream() -> list[str]:
        got: list[str] = []
        items = gateway_async.achat_stream(pending)

        async def read() -> None:
            async for item in items:
                got.append(item)

        task = asyncio.ensure_future(read())
        while len(got) < 2:
            await asyncio.sleep(0.01)
        task.cancel()  # what Django's handler does when the client disconnects
        with pytest.raises(asyncio.CancelledError):
            await task
        await items.aclose()  # closed again by the response: still one row
        return got

    got = async_to_sync(reader_cancelled_mid_stream)()
    fake.release()
    assert "".join(got) == "The quick"
    (call,) = LLMCall.all_orgs.filter(organization=caller.org)
    assert call.status == "cancelled" and call.error_class == "cancelled"
    assert call.attempts[-1]["status"] == "cancelled" and call.completion_tokens == 2
    assert _rows(caller.org) == (1, 1)  # the tokens it got were paid for, once


def test_redis_stopped_mid_stream_on_the_async_path_still_gives_the_answer_one_row_and_one_charge(
    fake, models, caller, allowance, restartable_redis
):
    fake.script("fake-small", {"hold_after": 1})
    pending = _admit(caller, stream=True)

    async def read() -> list:
        items = gateway_async.achat_stream(pending)
        first = await items.__anext__()  # the quota place and the breaker's leave were taken with Redis up
        restartable_redis.stop()
        fake.release()
        return [first] + [item async for item in items]

    got = async_to_sync(read)()
    end = got[-1]
    assert isinstance(end, gateway.GatewayStreamEnd) and "".join(got[:-1]) == end.text
    (call,) = LLMCall.all_orgs.filter(organization=caller.org)
    assert call.status == "ok" and str(call.pk) == end.call_id
    assert _rows(caller.org) == (1, 1)

    # Still down: admission and the answer go on without Redis (quota in PostgreSQL, breaker open to calls).
    result = async_to_sync(gateway_async.achat)(_admit(caller, stream=False, text="Second question"))
    assert result.text and _rows(caller.org) == (2, 2)


def test_with_both_stores_down_the_async_path_answers_503_and_writes_once_they_are_back(
    fake, models, caller, allowance, restartable_redis
):
    from django.db import connection

    pending = _admit(caller, stream=False)
    restartable_redis.stop()
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE OR REPLACE FUNCTION refuse_llm_call() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'ledger insert refused for the test'; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER refuse_llm_call BEFORE INSERT ON llm_llmcall "
            "FOR EACH ROW EXECUTE FUNCTION refuse_llm_call()"
        )
    try:
        with pytest.raises(ledger.LedgerUnavailable) as refused:
            async_to_sync(gateway_async.achat)(pending)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER IF EXISTS refuse_llm_call ON llm_llmcall")
    assert refused.value.status == 503 and refused.value.code == "service_unavailable"
    assert _rows(caller.org) == (0, 0)  # the answer withheld, nothing charged
    restartable_redis.start()
    result = async_to_sync(gateway_async.achat)(_admit(caller, stream=False, text="Once more"))
    assert result.text and _rows(caller.org) == (1, 1)


def test_a_failing_upstream_falls_back_on_the_async_path(fake, models, caller):
    fake.script("fake-large", {"status": 503}, {"status": 503}, {"status": 503})
    result = async_to_sync(gateway_async.achat)(_admit(caller, stream=False, model="test-large"))
    call = LLMCall.all_orgs.get(pk=result.call_id)
    assert call.status == "ok" and call.model_used == "test-small" and call.fallbacks_taken == 1
    assert [a["status"] for a in call.attempts] == ["error", "error", "error", "ok"]


def test_the_async_breaker_opens_and_lets_one_probe_through_like_the_sync_one(fake, settings):
    settings.LLM_BREAKER = {**settings.LLM_BREAKER, "failure_threshold": 2, "cooldown": 30}

    async def fail_twice() -> list:
        await breaker.arecord_failure("async-test")
        still_closed = await breaker.aallow("async-test")
        await breaker.arecord_failure("async-test")
        return [still_closed, await breaker.aallow("async-test")]

    closed, opened = async_to_sync(fail_twice)()
    assert closed is not None and opened is None and breaker.state("async-test") == "open"
    get_redis().set("crewdesk:llm:breaker:async-test:open_until", 0)  # the cooldown is over: half-open

    async def probe() -> list:
        return [await breaker.aallow("async-test"), await breaker.aallow("async-test")]

    first, second = async_to_sync(probe)()
    assert first is not None and not first.clean and second is None  # exactly one probe
    async_to_sync(breaker.arecord_success)(first)
    assert breaker.state("async-test") == "closed"


def test_a_hop_on_the_gateways_pool_runs_in_its_threads_with_the_callers_context_and_exception():
    import sys
    import threading
    from contextvars import ContextVar

    probe: ContextVar[str] = ContextVar("probe", default="")

    async def hops() -> tuple[tuple[str, str], str]:
        probe.set("the caller's")
        with threads.own_threads():
            seen = await threads.hop(lambda: (probe.get(), threading.current_thread().name))
            try:
                raise ValueError("being handled")
            except ValueError:
                handled = await threads.hop(lambda: repr(sys.exc_info()[1]))  # as response_for_exception
            with pytest.raises(KeyError):
                await threads.hop({}.__getitem__, "missing")
        return seen, handled

    (value, thread), handled = async_to_sync(hops)()
    assert value == "the caller's" and thread.startswith("crewdesk-gateway") and "being handled" in handled


# --- The end of the call on the loop (LLM_LEDGER batched: the row, the settle and the cache in one script) -------


@pytest.fixture
def batched(settings):
    settings.LLM_LEDGER = {**settings.LLM_LEDGER, "batched": True}
    get_redis().delete(ledger.STREAM)
    yield
    get_redis().delete(ledger.STREAM)


def _used(org) -> tuple[int, int]:
    """The org's quota counters in Redis: settled requests, places held."""
    redis = get_redis()
    (used,) = redis.scan_iter(f"crewdesk:quota:{org.pk}:*:used")
    return int(redis.get(used)), redis.zcard(used.removesuffix(":used") + ":held")


def test_a_batched_answer_on_the_loop_sends_one_entry_settles_once_and_keeps_the_exact_cache_entry(
    fake, models, caller, allowance, batched, monkeypatch
):
    request = ChatRequest(messages=[{"role": "user", "content": "Cache me"}])
    pending = gateway_async.admit(caller=caller, model="test-small", request=request)
    assert _used(caller.org) == (0, 1)
    hops: list = []
    real_hop_in = gateway_async._hop_in

    def counted_hop_in(*args, **kwargs):
        hops.append(args)
        return real_hop_in(*args, **kwargs)

    monkeypatch.setattr(gateway_async, "_hop_in", counted_hop_in)
    result = async_to_sync(gateway_async.achat)(pending)
    assert hops == []  # the end of the call took no hop to a worker thread
    assert ledger.pending() == 1 and _rows(caller.org) == (0, 0)  # in the stream, not yet in PostgreSQL
    assert _used(caller.org) == (1, 0)  # counted once, its place given back
    assert ledger.drain() == 1
    (call,) = LLMCall.all_orgs.filter(organization=caller.org)
    assert str(call.pk) == result.call_id and call.status == "ok" and call.cost_usd == result.cost_usd
    assert _rows(caller.org) == (1, 1)
    # The answer went into the exact cache with the row: the same question is a cache hit, with no place taken.
    again = gateway_async.admit(caller=caller, model="test-small", request=request)
    cached = async_to_sync(gateway_async.achat)(again)
    assert cached.cached and cached.text == result.text and _used(caller.org) == (1, 0)
    ledger.drain()
    assert LLMCall.all_orgs.get(pk=cached.call_id).cache == "exact" and _rows(caller.org) == (2, 1)


def test_a_batched_call_whose_script_redis_refuses_is_written_at_once_and_not_counted_twice(
    fake, models, caller, allowance, restartable_redis, batched
):
    pending = _admit(caller, stream=False)
    restartable_redis.stop()
    result = async_to_sync(gateway_async.achat)(pending)
    (call,) = LLMCall.all_orgs.filter(organization=caller.org)  # written at once, in a hop
    assert str(call.pk) == result.call_id and call.status == "ok" and _rows(caller.org) == (1, 1)
    restartable_redis.start()
    assert ledger.pending() == 0 and _used(caller.org)[0] == 0  # the script never ran: nothing to settle twice


def test_with_both_stores_down_a_batched_call_answers_503_and_charges_nothing(
    fake, models, caller, allowance, restartable_redis, batched
):
    from django.db import connection

    pending = _admit(caller, stream=False)
    restartable_redis.stop()
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE OR REPLACE FUNCTION refuse_llm_call() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'ledger insert refused for the test'; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER refuse_llm_call BEFORE INSERT ON llm_llmcall "
            "FOR EACH ROW EXECUTE FUNCTION refuse_llm_call()"
        )
    try:
        with pytest.raises(ledger.LedgerUnavailable):
            async_to_sync(gateway_async.achat)(pending)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER IF EXISTS refuse_llm_call ON llm_llmcall")
    assert _rows(caller.org) == (0, 0)
    restartable_redis.start()
    assert ledger.pending() == 0


def test_a_failed_batched_call_ends_on_the_loop_with_its_row_and_its_place_given_back(
    fake, models, caller, allowance, batched
):
    fake.script("fake-small", {"status": 400})  # not retryable: the call ends with the upstream's error
    pending = _admit(caller, stream=False)
    with pytest.raises(Exception) as failed:
        async_to_sync(gateway_async.achat)(pending)
    assert getattr(failed.value, "status", None) and _used(caller.org) == (0, 0)
    assert ledger.drain() == 1
    (call,) = LLMCall.all_orgs.filter(organization=caller.org)
    assert call.status == "error" and _rows(caller.org) == (1, 0)


def test_a_batched_stream_ends_on_the_loop_with_one_entry_and_one_charge(
    fake, models, caller, allowance, batched, monkeypatch
):
    pending = _admit(caller, stream=True)
    hops: list = []
    real_hop_in = gateway_async._hop_in

    def counted_hop_in(*args, **kwargs):
        hops.append(args)
        return real_hop_in(*args, **kwargs)

    monkeypatch.setattr(gateway_async, "_hop_in", counted_hop_in)

    async def read() -> list:
        return [item async for item in gateway_async.achat_stream(pending)]

    got = async_to_sync(read)()
    end = got[-1]
    assert isinstance(end, gateway.GatewayStreamEnd) and "".join(got[:-1]) == end.text and hops == []
    assert ledger.pending() == 1 and _used(caller.org) == (1, 0)
    assert ledger.drain() == 1
    (call,) = LLMCall.all_orgs.filter(organization=caller.org)
    assert str(call.pk) == end.call_id and call.status == "ok" and call.stream and _rows(caller.org) == (1, 1)


def test_a_batched_call_ending_on_the_loop_carries_its_trace_to_the_writer(fake, models, caller, allowance, batched):
    from saas.llm import tracing
    from saas.llm.models import Span, Trace

    pending = _admit(caller, stream=False)
    trace = tracing.for_caller(caller, "completion", "Chat completion", ends_with_call=True)  # as api_async does
    with tracing.trace(defer=True, **trace) as recorder:
        result = async_to_sync(gateway_async.achat)(pending)
    assert recorder.finished and not Trace.all_orgs.exists()  # it travels in the ledger entry
    assert ledger.drain() == 1
    (span,) = Span.all_orgs.filter(organization=caller.org)
    assert str(span.llm_call_id) == result.call_id and str(span.trace_id) == str(recorder.id)
    assert LLMCall.all_orgs.get(pk=result.call_id).trace_id == str(recorder.id)
