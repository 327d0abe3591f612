"""The gateway against the fake upstream, through every fault it can produce. Every request leaves exactly
one ledger row, with each attempt and its status."""

import time
from decimal import Decimal

import pytest

from saas.core import crypto
from saas.core.redis import get_redis
from saas.llm import breaker, gateway, providers
from saas.llm.models import LLMCall, OrgLLMSettings
from saas.llm.providers import (
    BadRequest,
    ChatRequest,
    ContentFiltered,
    ContextTooLong,
    RateLimited,
    UpstreamUnavailable,
)

pytestmark = pytest.mark.django_db

HELLO = ChatRequest(messages=[{"role": "user", "content": "Hello there"}])


def _calls():
    return list(LLMCall.all_orgs.order_by("created_at"))


def test_a_plain_call_is_answered_costed_and_recorded(fake, models, caller):
    result = gateway.chat(caller=caller, model="test-small", request=HELLO)
    assert result.text == "The quick brown fox jumps over the lazy dog."
    (call,) = _calls()
    assert call.status == "ok" and call.model_used == "test-small" and call.cache == "miss"
    assert (call.prompt_tokens, call.completion_tokens) == (result.usage.prompt_tokens, 9)
    expected = Decimal(call.prompt_tokens) * 1 / 10**6 + Decimal(9) * 2 / 10**6
    assert call.cost_usd == expected
    assert [a["status"] for a in call.attempts] == ["ok"]
    assert fake.requests()[-1]["auth"] == "Bearer sk-upstream-secret"
    assert crypto.decrypt(call.output_encrypted) == result.text
    assert "quick brown" not in call.output_encrypted  # encrypted at rest


def test_a_429_with_retry_after_is_retried_after_the_wait(fake, models, caller, settings):
    fake.script("fake-small", {"status": 429, "retry_after": 0.2})
    result = gateway.chat(caller=caller, model="test-small", request=HELLO)
    assert result.model == "test-small"
    (call,) = _calls()
    assert [a["status"] for a in call.attempts] == ["error", "ok"]
    assert call.attempts[0]["error"] == "rate_limited"
    assert call.latency_ms >= 200  # Retry-After was honoured
    assert call.status == "ok" and call.fallbacks_taken == 0


def test_server_errors_exhaust_retries_then_fall_back(fake, models, caller):
    fake.script("fake-large", {"status": 500}, {"status": 502}, {"status": 503})
    result = gateway.chat(caller=caller, model="test-large", request=HELLO)
    assert result.model == "test-small"
    (call,) = _calls()
    assert [(a["model"], a["status"]) for a in call.attempts] == [
        ("test-large", "error"), ("test-large", "error"), ("test-large", "error"), ("test-small", "ok"),
    ]  # fmt: skip
    assert call.fallbacks_taken == 1 and call.model_used == "test-small" and call.model_requested == "test-large"
    # Charged once, at the price of the model that answered.
    assert call.cost_usd == Decimal(call.prompt_tokens) * 1 / 10**6 + Decimal(call.completion_tokens) * 2 / 10**6


def test_a_timeout_is_retried(fake, models, caller, settings):
    settings.LLM_ROUTER = {**settings.LLM_ROUTER, "attempt_timeout": 0.5}
    fake.script("fake-small", {"delay": 1.0})
    assert gateway.chat(caller=caller, model="test-small", request=HELLO).text
    assert [a["error"] for a in _calls()[0].attempts] == ["timeout", None]


@pytest.mark.parametrize(
    ("step", "error_class"),
    [
        ({"status": 400, "code": "context_length_exceeded"}, ContextTooLong),
        ({"code": "content_filter"}, ContentFiltered),
        ({"status": 400}, BadRequest),
    ],
)
def test_non_retryable_errors_reach_the_client_after_one_attempt(fake, models, caller, step, error_class):
    fake.script("fake-large", step)
    with pytest.raises(error_class):
        gateway.chat(caller=caller, model="test-large", request=HELLO)
    (call,) = _calls()
    assert call.status == "error" and len(call.attempts) == 1 and call.cost_usd == 0
    assert len(fake.requests()) == 1  # no retry, no fallback for a request that cannot succeed


def test_when_everything_fails_the_client_gets_a_clear_error_and_nothing_is_charged(fake, models, caller):
    fake.script("fake-small", *[{"status": 429, "retry_after": 0}] * 3)
    with pytest.raises(RateLimited):
        gateway.chat(caller=caller, model="test-small", request=HELLO)
    (call,) = _calls()
    assert call.status == "error" and call.error_class == "rate_limited" and call.cost_usd == 0
    assert len(call.attempts) == 3


def test_the_circuit_opens_after_repeated_failures_and_is_shared_through_redis(fake, models, caller, settings):
    settings.LLM_BREAKER = {"failure_threshold": 3, "window": 60, "cooldown": 30}
    settings.LLM_ROUTER = {**settings.LLM_ROUTER, "max_retries": 0}
    fake.script("fake-large", *[{"status": 500}] * 3)
    for _ in range(3):
        gateway.chat(caller=caller, model="test-large", request=HELLO)  # falls back to test-small each time
    # test-small succeeded on the same upstream, which closes the circuit again: use a separate upstream.
    assert breaker.state("openai") == "closed"
    for _ in range(3):
        breaker.record_failure("other")
    assert breaker.state("other") == "open" and not breaker.allow("other")


def test_an_open_circuit_fails_fast_without_calling_the_upstream(fake, models, caller, settings):
    settings.LLM_BREAKER = {"failure_threshold": 1, "window": 60, "cooldown": 30}
    breaker.record_failure("openai")
    with pytest.raises(Exception, match="stopped calling"):
        gateway.chat(caller=caller, model="test-small", request=HELLO)
    assert fake.requests() == []
    assert _calls()[0].attempts[0]["status"] == "circuit_open"


def test_streams_yield_deltas_and_record_ttft(fake, models, caller):
    items = list(gateway.chat_stream(caller=caller, model="test-small", request=HELLO))
    *deltas, end = items
    assert "".join(deltas) == "The quick brown fox jumps over the lazy dog."
    assert isinstance(end, gateway.GatewayStreamEnd) and end.usage.completion_tokens == 9
    (call,) = _calls()
    assert call.stream and call.status == "ok" and call.ttft_ms is not None and call.ttft_ms <= call.latency_ms


@pytest.mark.parametrize("step", [{"malformed": True}, {"disconnect_after": 3}])
def test_a_stream_broken_after_tokens_is_an_error_not_a_silent_retry(fake, models, caller, step):
    fake.script("fake-small", step)
    received = []
    with pytest.raises(UpstreamUnavailable):
        for item in gateway.chat_stream(caller=caller, model="test-small", request=HELLO):
            received.append(item)
    assert received  # some tokens had arrived: repeating them from a retry would garble the answer
    (call,) = _calls()
    assert call.status == "error" and call.error_class == "upstream_unavailable" and call.cost_usd == 0
    assert len(fake.requests()) == 1


def test_a_stream_failing_before_its_first_token_falls_back(fake, models, caller):
    fake.script("fake-large", {"status": 503}, {"status": 503}, {"status": 503})
    *deltas, end = list(gateway.chat_stream(caller=caller, model="test-large", request=HELLO))
    assert end.model == "test-small" and "".join(deltas).startswith("The quick")


def test_closing_a_stream_cancels_it_and_records_the_cancellation(fake, models, caller):
    fake.config(token_rate=20)
    stream = gateway.chat_stream(caller=caller, model="test-small", request=HELLO)
    first = next(stream)
    assert first
    stream.close()
    (call,) = _calls()
    assert call.status == "cancelled" and call.error_class == "cancelled"
    assert crypto.decrypt(call.output_encrypted) == first


def test_the_exact_cache_answers_repeats_and_records_the_saving(fake, models, caller):
    first = gateway.chat(caller=caller, model="test-small", request=HELLO)
    second = gateway.chat(caller=caller, model="test-small", request=HELLO)
    assert second.text == first.text and second.cached
    assert len(fake.requests()) == 1
    miss, hit = _calls()
    assert (miss.cache, hit.cache) == ("miss", "exact")
    assert hit.cost_usd == 0 and hit.cost_saved_usd == miss.cost_usd > 0
    gateway.chat(caller=caller, model="test-small", request=HELLO, bypass_cache=True)
    assert len(fake.requests()) == 2 and _calls()[-1].cache == "bypass"
    assert _calls()[-1].cost_usd == miss.cost_usd  # a bypass is a real upstream call, and paid like one

    assert len(list(get_redis().scan_iter(f"crewdesk:llm:exact:{caller.org.pk}:*"))) == 1  # findable per org
    other_org = gateway.Caller(org=type(caller.org).objects.create(name="B", slug="b-org"))
    assert not gateway.chat(caller=other_org, model="test-small", request=HELLO).cached  # never across orgs


def test_personal_data_is_masked_upstream_and_restored_for_the_user(fake, models, caller):
    request = ChatRequest(messages=[{"role": "user", "content": "echo: write to ann@example.com or +44 20 7946 0958"}])
    result = gateway.chat(caller=caller, model="test-small", request=request)
    sent = fake.requests()[-1]["body"]["messages"][0]["content"]
    assert "ann@example.com" not in sent and "[EMAIL_1]" in sent and "[PHONE_1]" in sent
    assert result.text == "write to ann@example.com or +44 20 7946 0958"  # restored for the user
    call = _calls()[0]
    assert call.pii_masked == 2
    assert "ann@example.com" not in crypto.decrypt(call.input_encrypted) + crypto.decrypt(call.output_encrypted)
    streamed = "".join(
        i for i in gateway.chat_stream(caller=caller, model="test-small", request=request, bypass_cache=True)
        if isinstance(i, str)
    )  # fmt: skip
    assert streamed == "write to ann@example.com or +44 20 7946 0958"


def test_an_org_can_block_personal_data(fake, models, caller):
    OrgLLMSettings.all_orgs.create(organization=caller.org, pii_policy="block")
    request = ChatRequest(messages=[{"role": "user", "content": "my card is 4111 1111 1111 1111"}])
    with pytest.raises(BadRequest, match="personal data"):
        gateway.chat(caller=caller, model="test-small", request=request)
    assert fake.requests() == []
    assert _calls()[0].error_class == "personal_data_blocked"


@pytest.mark.parametrize(
    ("model", "request_", "kind"),
    [
        ("nope", HELLO, "model_not_found"),
        ("test-small", ChatRequest(messages=[]), "bad_request"),
        ("test-small", ChatRequest(messages=[{"role": "wizard", "content": "hi"}]), "bad_request"),
        ("test-small", ChatRequest(messages=[{"role": "user", "content": "word " * 20000}]), "context_too_long"),
    ],
)
def test_bad_requests_never_reach_the_upstream(fake, models, caller, model, request_, kind):
    with pytest.raises(BadRequest) as excinfo:
        gateway.chat(caller=caller, model=model, request=request_)
    assert excinfo.value.kind == kind
    assert fake.requests() == []
    assert _calls()[0].error_class == kind


def test_org_model_policy_and_auto_routing(fake, models, caller):
    OrgLLMSettings.all_orgs.create(organization=caller.org, allowed_models=["test-small"])
    with pytest.raises(BadRequest) as excinfo:
        gateway.chat(caller=caller, model="test-large", request=HELLO)
    assert excinfo.value.kind == "model_not_allowed"
    assert gateway.chat(caller=caller, model="auto", request=HELLO).model == "test-small"


def test_auto_picks_the_large_tier_for_long_or_complex_work(fake, models, caller):
    assert gateway.chat(caller=caller, model="auto", request=HELLO).model == "test-small"
    assert gateway.chat(caller=caller, model="auto", request=HELLO, complexity="high").model == "test-large"
    crew = gateway.Caller(org=caller.org, feature="crew")
    assert gateway.chat(caller=crew, model="auto", request=HELLO, bypass_cache=True).model == "test-large"


def test_the_semantic_cache_answers_a_rephrased_question_within_its_scope_only(fake, models, caller):
    def ask(question, scope="kb-v1", org_caller=caller):
        request = ChatRequest(
            messages=[{"role": "system", "content": "Context."}, {"role": "user", "content": question}]
        )
        return gateway.chat(caller=org_caller, model="test-small", request=request, semantic_scope=scope)

    first = ask("How many vacation days do new employees get?")
    again = ask("How many vacation days do new employees get ?")  # not byte-identical: the exact cache misses
    assert again.cached and again.text == first.text
    assert _calls()[-1].cache == "semantic" and _calls()[-1].cost_saved_usd > 0
    assert len(fake.requests()) == 1
    assert not ask("What is the parking policy for visitors?").cached  # different meaning
    assert not ask("How many vacation days do new employees get?", scope="kb-v2").cached  # re-indexed KB
    other = gateway.Caller(org=type(caller.org).objects.create(name="B", slug="b-sem"))
    assert not ask("How many vacation days do new employees get?", org_caller=other).cached  # never across orgs
    assert len(fake.requests()) == 4


def test_the_semantic_cache_skips_conversations_and_personal_data(fake, models, caller):
    multi = ChatRequest(
        messages=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Days off?"},
        ]
    )
    for _ in range(2):
        gateway.chat(caller=caller, model="test-small", request=multi, semantic_scope="kb", bypass_cache=False)
    personal = ChatRequest(messages=[{"role": "user", "content": "Is ann@example.com on leave?"}])
    gateway.chat(caller=caller, model="test-small", request=personal, semantic_scope="kb")
    from saas.llm.models import SemanticCacheEntry

    assert SemanticCacheEntry.all_orgs.count() == 0


def test_an_unexpected_provider_crash_is_recorded_and_reported_cleanly(fake, models, caller, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("segfault-ish")

    monkeypatch.setattr(providers.OpenAIProvider, "complete", explode)
    with pytest.raises(UpstreamUnavailable, match="unexpectedly"):
        gateway.chat(caller=caller, model="test-small", request=HELLO)
    (call,) = _calls()
    assert call.status == "error" and call.error_class == "upstream_unavailable"
    assert len(call.attempts) == 3  # treated as retryable, like any upstream failure


def test_the_registry_is_editable_in_the_admin_and_the_ledger_is_read_only(admin_client, fake, models, caller):
    gateway.chat(caller=caller, model="test-small", request=HELLO)
    call = _calls()[0]
    assert admin_client.get("/admin/llm/modelconfig/").status_code == 200
    response = admin_client.get(f"/admin/llm/modelconfig/{models['small'].pk}/change/")
    assert response.status_code == 200 and b"input_price_per_mtok" in response.content
    assert admin_client.get("/admin/llm/llmcall/").status_code == 200
    assert admin_client.post(f"/admin/llm/llmcall/{call.pk}/delete/", {"post": "yes"}).status_code == 403


def test_streamed_answers_use_and_fill_the_semantic_cache(fake, models, caller):
    def stream(question):
        request = ChatRequest(messages=[{"role": "user", "content": question}])
        items = list(gateway.chat_stream(caller=caller, model="test-small", request=request, semantic_scope="kb-1"))
        return "".join(i for i in items if isinstance(i, str)), items[-1]

    first_text, first_end = stream("Where is the spare office key kept?")
    second_text, second_end = stream("Where is the spare office key kept ?")
    assert not first_end.cached and second_end.cached and second_text == first_text
    assert len(fake.requests()) == 1 and _calls()[-1].cache == "semantic"


def test_a_success_forgives_earlier_failures_and_a_half_open_circuit_lets_one_probe_through(settings):
    settings.LLM_BREAKER = {"failure_threshold": 3, "window": 60, "cooldown": 30}
    get_redis().delete(*breaker._keys("probe-test"))
    breaker.record_failure("probe-test")
    breaker.record_failure("probe-test")
    permit = breaker.allow("probe-test")
    assert permit is not None and not permit.clean
    breaker.record_success(permit)
    breaker.record_failure("probe-test")
    assert breaker.state("probe-test") == "closed"  # 1 failure since the success, not 3

    breaker.record_failure("probe-test")
    breaker.record_failure("probe-test")
    assert breaker.allow("probe-test") is None
    settings.LLM_BREAKER = {**settings.LLM_BREAKER, "cooldown": 0}
    get_redis().set("crewdesk:llm:breaker:probe-test:open_until", 0)  # the cooldown has passed
    probe = breaker.allow("probe-test")
    assert probe is not None and breaker.allow("probe-test") is None  # one probe at a time
    breaker.record_success(probe)
    clean = breaker.allow("probe-test")
    assert breaker.state("probe-test") == "closed" and clean is not None and clean.clean


def test_a_clean_circuit_is_trusted_for_a_second_and_a_failure_here_ends_the_trust(settings, monkeypatch):
    """A process that read a closed circuit with no failure trusts that reading for clean_read_seconds (no
    Redis round trip per call); a circuit another process opened is seen once it has passed, and this
    process's own failure is seen at once."""
    settings.LLM_BREAKER = {"failure_threshold": 2, "window": 60, "cooldown": 30, "clean_read_seconds": 1}
    get_redis().delete(*breaker._keys("trust-test"))
    clock = [1000.0]
    monkeypatch.setattr(breaker.time, "monotonic", lambda: clock[0])
    first = breaker.allow("trust-test")
    assert first is not None and first.clean
    # Another process opens the circuit: this one still trusts its reading, without asking Redis...
    get_redis().set("crewdesk:llm:breaker:trust-test:open_until", time.time() + 30)
    with monkeypatch.context() as unreachable:
        unreachable.setattr(breaker, "get_redis", lambda: (_ for _ in ()).throw(AssertionError("asked Redis")))
        assert breaker.allow("trust-test") == breaker.Permit("trust-test", clean=True)
    # ... until the second has passed.
    clock[0] += 1.01
    assert breaker.allow("trust-test") is None

    get_redis().delete(*breaker._keys("trust-test"))
    assert breaker.allow("trust-test") is not None  # clean again, trusted again
    breaker.record_failure("trust-test")
    breaker.record_failure("trust-test")  # opens it: this process knows at once, within the second
    assert breaker.allow("trust-test") is None


def test_deferred_calls_hand_their_row_over_before_returning_and_cache_when_told(fake, models, caller, settings):
    """An API hot path (defer_records): the row goes to the ledger stream before the answer is returned (the
    writer inserts it), and only the cache entries wait for `record()`."""
    from saas.llm import ledger

    settings.LLM_LEDGER = {**settings.LLM_LEDGER, "batched": True}
    get_redis().delete(ledger.STREAM)
    result = gateway.chat(caller=caller, model="test-small", request=HELLO, defer_records=True)
    assert result.text.startswith("The quick") and not LLMCall.all_orgs.exists()
    assert ledger.pending() == 1 and result.record is not None
    assert ledger.drain(claim_seconds=0) == 1
    call = LLMCall.all_orgs.get()
    assert str(call.pk) == result.call_id and call.status == "ok" and call.completion_tokens == 9
    assert call.cost_usd == result.cost_usd
    missed = gateway.chat(caller=caller, model="test-small", request=HELLO, defer_records=True)
    assert not missed.cached  # the answer was not cached yet: record() had not run
    assert missed.record is not None
    missed.record()
    again = gateway.chat(caller=caller, model="test-small", request=HELLO, defer_records=True)
    assert again.cached and again.record is None
    assert ledger.drain(claim_seconds=0) == 2 and LLMCall.all_orgs.count() == 3
