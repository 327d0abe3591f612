"""AI-request quotas through the gateway: the Free plan stops at its allowance with a 402 naming the limit,
cache hits and failures do not use it, paid plans run into overage up to the spend cap, and Redis is only a
fast copy of the usage ledger."""

import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.db import connection

from billing import quota
from billing.catalogue import sync_plans
from billing.models import OrgBilling, Plan, UsageEvent
from saas.core.redis import get_redis
from saas.llm import gateway
from saas.llm.models import LLMCall
from saas.llm.providers import BadRequest, ChatRequest, QuotaExceeded
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import OrganizationFactory

pytestmark = pytest.mark.django_db
HELLO = ChatRequest([{"role": "user", "content": "Hello"}])


@pytest.fixture
def free(db):
    sync_plans(Plan)  # a flushed test database has lost the seeded catalogue
    Plan.objects.filter(slug="free").update(included_requests=3)
    for key in get_redis().scan_iter("crewdesk:quota:*"):
        get_redis().delete(key)
    return OrganizationFactory()


def _ask(org, n=1, model="local", **kwargs):
    caller = gateway.Caller(org=org, feature="chat")
    return [gateway.chat(caller=caller, model=model, request=HELLO, **kwargs) for _ in range(n)]


def test_the_free_plan_stops_at_its_allowance_with_a_402_naming_the_limit(free):
    client = key_client(issue_key(free, scopes=["read", "ask"]).secret)
    for n in range(3):
        answered = client.post("/api/v1/generate", {"model": "local", "prompt": f"Hello {n}"}, format="json")
        assert answered.status_code == 200
    refused = client.post("/api/v1/generate", {"model": "local", "prompt": "Hello 3"}, format="json")
    assert refused.status_code == 402
    error = refused.json()["error"]
    assert error["code"] == "quota_exceeded" and "3 AI requests of its Free plan" in error["message"]
    assert error["details"] == {"limit": "ai_requests", "plan": "free", "used": 3, "allowed": 3,
                                "upgrade_url": f"/o/{free.slug}/billing/"}  # fmt: skip
    assert UsageEvent.all_orgs.filter(organization=free, kind="request").count() == 3
    refusal = LLMCall.all_orgs.filter(organization=free).latest("created_at")
    assert refusal.status == "error" and refusal.error_class == "quota_exceeded"  # refusals are in the ledger too
    usage = client.get("/api/v1/usage").json()
    assert usage["ai_requests"] == {"used": 3, "included": 3, "limit": 3, "remaining": 0}
    assert usage["plan"]["slug"] == "free" and [row["ai_requests"] for row in usage["by_feature"]] == [3]
    assert usage["by_model"] == [{"model": "local", "ai_requests": 3, "cost_usd": "0.000000"}]


def test_cache_hits_and_failures_do_not_use_the_allowance(free, fake, models):
    _ask(free, 1, model="test-small")
    _ask(free, 2, model="test-small")  # the same question again: exact-cache hits
    fake.script("fake-small", {"status": 400, "message": "bad"})
    with pytest.raises(BadRequest):
        _ask(free, 1, model="test-small", bypass_cache=True)
    events = list(UsageEvent.all_orgs.filter(organization=free).values_list("kind", flat=True))
    assert sorted(events) == ["cache_hit", "cache_hit", "request"]
    _ask(free, 2, model="test-small", bypass_cache=True)  # two more: the allowance (3) is used, not exceeded
    with pytest.raises(QuotaExceeded):
        _ask(free, 1, model="test-small", bypass_cache=True)


def test_a_paid_plan_runs_into_overage_up_to_the_spend_cap(free):
    pro = Plan.objects.get(slug="pro")
    Plan.objects.filter(pk=pro.pk).update(included_requests=2, price_per_extra_request=Decimal("0.01"))
    OrgBilling.objects.for_org(free).create(organization=free, plan=pro, status="active", spend_cap_usd=Decimal("0.02"))
    _ask(free, 4, bypass_cache=True)  # 2 included + 2 of overage ($0.02)
    with pytest.raises(QuotaExceeded, match="spend cap"):
        _ask(free, 1, bypass_cache=True)
    usage = key_client(issue_key(free).secret).get("/api/v1/usage").json()
    assert usage["overage_requests"] == 2 and usage["projected_bill_usd"] == "10.02"


def test_redis_is_reseeded_from_the_usage_ledger_and_stale_reservations_expire(free):
    _ask(free, 2, bypass_cache=True)
    used_key, held_key = quota._keys(free.pk, quota.selectors.billing_state(org=free).period_start)
    get_redis().delete(used_key)  # Redis lost its copy
    get_redis().zadd(held_key, {"a-dead-worker": 1.0})  # a reservation whose process died long ago
    _ask(free, 1, bypass_cache=True)  # seeded from the ledger (2), the dead reservation ignored
    assert int(get_redis().get(used_key)) == 3
    with pytest.raises(QuotaExceeded):
        _ask(free, 1, bypass_cache=True)


@pytest.mark.django_db(transaction=True)
def test_fifty_parallel_requests_one_below_the_allowance_get_exactly_one_answer(free):
    """The acceptance test: 50 requests at once when one is left; one is answered, 49 are refused."""
    from saas.llm.models import ModelConfig
    from saas.llm.registry import sync_registry

    sync_registry(ModelConfig)  # a flushed test database has lost the seeded registry
    Plan.objects.filter(slug="free").update(included_requests=10)
    _ask(free, 9, bypass_cache=True)
    start = threading.Barrier(50)

    def one(_: int) -> str:
        try:
            start.wait()
            _ask(free, 1, bypass_cache=True)
            return "answered"
        except QuotaExceeded:
            return "refused"
        finally:
            connection.close()

    with ThreadPoolExecutor(50) as pool:
        outcomes = list(pool.map(one, range(50)))
    assert outcomes.count("answered") == 1 and outcomes.count("refused") == 49
    assert UsageEvent.all_orgs.filter(organization=free, kind="request").count() == 10


def test_warnings_at_80_and_100_percent_go_to_owners_and_admins_once(
    free, mailoutbox, django_capture_on_commit_callbacks
):
    from accounts.models import Notification
    from billing import services
    from tests.accounts.factories import MembershipFactory

    Plan.objects.filter(slug="free").update(included_requests=5)
    owner = MembershipFactory(organization=free, role="owner")
    MembershipFactory(organization=free, role="member")
    crossings = []
    for _ in range(5):
        with django_capture_on_commit_callbacks() as callbacks:
            _ask(free, 1, bypass_cache=True)
        crossings.append(len(callbacks))
    assert crossings == [0, 0, 0, 1, 1]  # the 4th request crosses 80%, the 5th 100%

    with django_capture_on_commit_callbacks(execute=True):  # the email leaves once the rows are committed
        assert services.usage_warn(org_id=free.pk, threshold=80) is True
    assert services.usage_warn(org_id=free.pk, threshold=80) is False  # once per period
    (note,) = Notification.all_orgs.filter(organization=free)
    assert note.user_id == owner.user_id and "used 80% of the 5 AI requests" in note.title
    assert note.url == f"/o/{free.slug}/billing/"
    (mail,) = mailoutbox
    assert mail.to == [owner.user.email] and "/billing/" in mail.body


def test_thresholds_are_crossed_once():
    from billing.services import usage_thresholds_crossed

    assert usage_thresholds_crossed(included=1000, before=799, after=800) == [80]
    assert usage_thresholds_crossed(included=1000, before=800, after=801) == []
    assert usage_thresholds_crossed(included=1, before=0, after=1) == [80, 100]
    assert usage_thresholds_crossed(included=0, before=0, after=1) == []


# --- A chat completion's place, taken in its rate-limit round trip (quota.places_taken_ahead) ---------------

ASK_BODY = {"model": "local", "messages": [{"role": "user", "content": "Hello"}]}


def _held(org) -> int:
    """Places in flight for the org, in Redis."""
    return sum(int(get_redis().zcard(key)) for key in get_redis().scan_iter(f"{quota.key_prefix(org.pk)}*:held"))


def _bypassing(client, body=ASK_BODY):
    return client.post("/v1/chat/completions", body, format="json", HTTP_X_CREWDESK_CACHE="bypass")


def _requests(org) -> int:
    return UsageEvent.all_orgs.filter(organization=org, kind="request").count()


@pytest.fixture
def reserves_asked(monkeypatch):
    """The names of the quota scripts run on their own (a place taken ahead runs none)."""
    sent: list[str] = []
    script = quota._script

    def counting(name: str):
        sent.append(name)
        return script(name)

    monkeypatch.setattr(quota, "_script", counting)
    return sent


def test_a_chat_completion_takes_its_place_with_its_rate_limits(free, reserves_asked):
    client = key_client(issue_key(free, scopes=["read", "ask"]).secret)
    assert _bypassing(client).status_code == 200
    assert "reserve" in reserves_asked  # the period's counter was not in Redis yet: seeded from the ledger
    reserves_asked.clear()
    assert _bypassing(client).status_code == 200
    assert "reserve" not in reserves_asked  # the place came with the rate limits
    assert _requests(free) == 2 and _held(free) == 0


def test_a_request_that_needs_no_place_gives_back_the_one_taken_ahead(free, reserves_asked):
    client = key_client(issue_key(free, scopes=["read", "ask"]).secret)
    assert client.post("/v1/chat/completions", ASK_BODY, format="json").status_code == 200  # seeds the counter
    cached = client.post("/v1/chat/completions", ASK_BODY, format="json")
    assert cached.status_code == 200 and cached.json()["crewdesk"]["cached"] is True
    invalid = client.post("/v1/chat/completions", {"model": "local", "messages": "Hello"}, format="json")
    assert invalid.status_code == 400
    unknown = client.post("/v1/chat/completions", {**ASK_BODY, "model": "no-such-model"}, format="json")
    assert unknown.status_code in (400, 404)
    assert _held(free) == 0 and _requests(free) == 1  # each place taken ahead was given back, none counted
    assert reserves_asked.count("reserve") == 2  # the first call's, seeding the counter; none after it


def test_an_org_at_its_limit_still_gets_cached_answers_and_a_miss_is_refused(free):
    client = key_client(issue_key(free, scopes=["read", "ask"]).secret)
    for n in range(3):
        body = {**ASK_BODY, "messages": [{"role": "user", "content": f"Hello {n}"}]}
        assert client.post("/v1/chat/completions", body, format="json").status_code == 200
    again = client.post("/v1/chat/completions", {**ASK_BODY, "messages": [{"role": "user", "content": "Hello 1"}]},
                        format="json")  # fmt: skip
    assert again.status_code == 200 and again.json()["crewdesk"]["cached"] is True  # refused ahead, served anyway
    refused = client.post("/v1/chat/completions", ASK_BODY, format="json")
    assert refused.status_code == 402 and refused.json()["error"]["code"] == "quota_exceeded"
    assert _requests(free) == 3 and _held(free) == 0


@pytest.mark.django_db(transaction=True)
def test_parallel_chat_completions_one_below_the_allowance_get_exactly_one_answer(free):
    from saas.llm.models import ModelConfig
    from saas.llm.registry import sync_registry

    sync_registry(ModelConfig)  # a flushed test database has lost the seeded registry
    Plan.objects.filter(slug="free").update(included_requests=4)
    secret = issue_key(free, scopes=["read", "ask"]).secret
    client = key_client(secret)
    for n in range(3):
        body = {**ASK_BODY, "messages": [{"role": "user", "content": f"Hello {n}"}]}
        assert _bypassing(client, body).status_code == 200
    start = threading.Barrier(20)

    def one(_: int) -> int:
        try:
            start.wait()
            return _bypassing(key_client(secret)).status_code
        finally:
            connection.close()

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(one, range(20)))
    assert statuses.count(200) == 1 and statuses.count(402) == 19
    assert _requests(free) == 4 and _held(free) == 0
