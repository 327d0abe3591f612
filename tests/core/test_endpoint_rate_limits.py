"""Per-endpoint rate limits: ask, generate, /v1/chat/completions, /v1/embeddings and uploads count in buckets of
their own, per key (or member) and per org, instead of the API's general ones; a plan may set its own rates."""

import pytest
from django.core.cache import cache
from django.core.exceptions import ValidationError

from accounts.models import Membership
from billing.catalogue import sync_plans
from billing.models import OrgBilling, Plan
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import MembershipFactory, OrganizationFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_counters():
    cache.clear()  # the real Redis: counters of earlier tests must not count here
    yield
    cache.clear()


def _limits(settings, endpoint, org="1000/minute", key="1000/minute"):
    settings.ENDPOINT_RATE_LIMITS = {**settings.ENDPOINT_RATE_LIMITS, endpoint: {"org": org, "key": key}}


def test_a_burst_of_asks_hits_the_ask_bucket_and_get_calls_still_succeed(settings):
    _limits(settings, "ask", key="3/minute")
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "api_key": "4/minute", "org": "4/minute"}
    org = OrganizationFactory()
    client = key_client(issue_key(org, scopes=["read", "ask"]).secret)
    asks = [client.post("/api/v1/ask", {"question": "What is our refund policy?"}, format="json") for _ in range(4)]
    assert [r.status_code for r in asks[:3]] == [200, 200, 200], asks[0].content
    limited = asks[3]
    assert limited.status_code == 429
    error = limited.json()["error"]
    assert error["code"] == "rate_limited" and error["details"]["limit"] == "api:ask:key 3/minute"
    assert error["request_id"]
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert limited["RateLimit-Limit"] == "3" and limited["RateLimit-Remaining"] == "0"
    assert limited["RateLimit-Policy"] == "3;w=60" and 1 <= int(limited["RateLimit-Reset"]) <= 60
    # The general buckets (4 a minute per key and per org) were not touched by the asks.
    assert [client.get("/api/v1/me").status_code for _ in range(4)] == [200] * 4
    assert client.get("/api/v1/me").status_code == 429  # they are still enforced


def test_key_and_org_buckets_are_independent_and_the_org_bucket_spans_its_keys(settings):
    _limits(settings, "ask", org="4/minute", key="3/minute")
    org = OrganizationFactory()
    first, second = (key_client(issue_key(org, scopes=["ask"]).secret) for _ in range(2))

    def ask(client):  # the limit counts a request before its body is read: an empty body is enough
        return client.post("/api/v1/ask", {}, format="json")

    assert [ask(first).status_code for _ in range(3)] == [400] * 3
    refused = ask(first)
    assert refused.status_code == 429 and refused.json()["error"]["details"]["limit"] == "api:ask:key 3/minute"
    # The first key's refused request did not count against the org: the second key gets the org's fourth.
    assert ask(second).status_code == 400
    shared = ask(second)
    assert shared.status_code == 429 and shared.json()["error"]["details"]["limit"] == "api:ask:org 4/minute"
    # Another org has its own buckets.
    assert ask(key_client(issue_key(OrganizationFactory(), scopes=["ask"]).secret)).status_code == 400


def test_a_signed_in_member_has_an_ask_bucket_of_their_own(settings):
    from rest_framework.test import APIClient

    _limits(settings, "ask", key="2/minute")
    member = MembershipFactory(role=Membership.Role.MEMBER)
    browser = APIClient()
    browser.force_login(member.user)
    assert [browser.post("/api/v1/ask", {}, format="json").status_code for _ in range(3)] == [400, 400, 429]
    key = key_client(issue_key(member.organization, scopes=["ask"]).secret)
    assert key.post("/api/v1/ask", {}, format="json").status_code == 400


@pytest.mark.parametrize(
    ("endpoint", "path", "scopes"),
    [("generate", "/api/v1/generate", ["ask"]), ("upload", "/api/v1/documents", ["documents:write"])],
)
def test_generate_and_uploads_have_their_own_buckets(settings, endpoint, path, scopes):
    _limits(settings, endpoint, key="1/minute")
    org = OrganizationFactory()
    client = key_client(issue_key(org, scopes=[*scopes, "read"]).secret)
    assert client.post(path, {}, format="json").status_code == 400
    limited = client.post(path, {}, format="json")
    assert limited.status_code == 429 and limited.json()["error"]["details"]["limit"] == f"api:{endpoint}:key 1/minute"
    assert client.get("/api/v1/documents").status_code == 200  # listing is a general call


@pytest.mark.parametrize(("endpoint", "path"), [("chat_completions", "/v1/chat/completions"),
                                                 ("embeddings", "/v1/embeddings")])  # fmt: skip
def test_the_openai_routes_answer_429_in_openais_shape(settings, endpoint, path):
    _limits(settings, endpoint, org="1/minute")
    client = key_client(issue_key(OrganizationFactory(), scopes=["ask", "read"]).secret)
    assert client.post(path, {}, format="json").status_code == 400
    limited = client.post(path, {}, format="json")
    assert limited.status_code == 429
    assert limited.json()["error"]["type"] == "rate_limit_error" and limited.json()["error"]["code"] == "rate_limited"
    assert int(limited["Retry-After"]) >= 1 and limited["RateLimit-Limit"] == "1"
    assert client.get("/v1/models").status_code == 200


def test_a_plans_endpoint_rates_replace_the_servers(settings):
    sync_plans(Plan)
    _limits(settings, "ask", key="2/minute")
    free_org, team_org = OrganizationFactory(), OrganizationFactory()
    OrgBilling.objects.for_org(team_org).create(organization=team_org, plan=Plan.objects.get(slug="team"),
                                                status="active")  # fmt: skip
    assert Plan.objects.get(slug="team").endpoint_rate_limits["ask"] == {"org": "3000/minute", "key": "600/minute"}
    free, team = (key_client(issue_key(org, scopes=["ask"]).secret) for org in (free_org, team_org))
    assert [free.post("/api/v1/ask", {}, format="json").status_code for _ in range(3)] == [400, 400, 429]
    assert [team.post("/api/v1/ask", {}, format="json").status_code for _ in range(3)] == [400] * 3
    # An operator sets the Free plan's own ask rate per org; the per-key rate it leaves out stays the server's.
    plan = Plan.objects.get(slug="free")
    plan.endpoint_rate_limits = {"ask": {"org": "1/minute"}}
    plan.full_clean()
    plan.save()
    other = key_client(issue_key(OrganizationFactory(), scopes=["ask"]).secret)
    limited = [other.post("/api/v1/ask", {}, format="json") for _ in range(2)][1]
    assert limited.status_code == 429 and limited.json()["error"]["details"]["limit"] == "api:ask:org 1/minute"


@pytest.mark.parametrize(
    ("value", "message"),
    [({"asks": {"org": "1/minute"}}, "Unknown endpoint"), ({"ask": {"team": "1/minute"}}, '"org" and/or "key"'),
     ({"ask": {"org": "lots"}}, "Not a rate limit"), (["ask"], "Write it as"), ({"ask": {"key": 5}}, "a rate is text")],
)  # fmt: skip
def test_a_plans_endpoint_rates_are_checked(value, message):
    sync_plans(Plan)
    plan = Plan.objects.get(slug="pro")
    plan.endpoint_rate_limits = value
    with pytest.raises(ValidationError, match=message):
        plan.full_clean()
