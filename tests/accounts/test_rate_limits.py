import pytest
from django.core.cache import cache

from tests.accounts.conftest import issue_key, key_client

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_counters():
    cache.clear()  # the real Redis cache: counters of earlier tests must not count here
    yield
    cache.clear()


def test_an_api_key_over_its_limit_gets_429_with_retry_after(org, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "api_key": "3/minute"}
    client = key_client(issue_key(org).secret)
    assert [client.get("/api/v1/me").status_code for _ in range(3)] == [200, 200, 200]
    response = client.get("/api/v1/me")
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    error = response.json()["error"]
    assert error["code"] == "rate_limited" and error["details"]["limit"] == "api:key 3/minute"
    # Another key of the same org has its own budget.
    assert key_client(issue_key(org).secret).get("/api/v1/me").status_code == 200


def test_the_org_limit_spans_all_its_keys(org, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "org": "4/minute"}
    clients = [key_client(issue_key(org).secret) for _ in range(2)]
    statuses = [clients[i % 2].get("/api/v1/me").status_code for i in range(6)]
    assert statuses == [200, 200, 200, 200, 429, 429]


def test_a_signed_in_user_has_a_limit_too(org, make_member, session_client, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "user": "2/minute"}
    client = session_client(make_member(org).user)
    assert [client.get("/api/v1/me").status_code for _ in range(3)] == [200, 200, 429]


@pytest.mark.parametrize("path", ["/accounts/login/", "/accounts/signup/", "/accounts/password/reset/"])
def test_auth_forms_are_limited_per_ip(client, settings, path):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "auth_ip": "3/minute"}
    data = {"login": "x@example.com", "email": "x@example.com", "password": "nope"}
    statuses = [client.post(path, data, REMOTE_ADDR="192.0.2.10").status_code for _ in range(3)]
    assert 429 not in statuses
    limited = client.post(path, data, REMOTE_ADDR="192.0.2.10")
    assert limited.status_code == 429 and int(limited["Retry-After"]) >= 1
    assert limited.json()["error"]["code"] == "rate_limited"
    html = client.post(path, data, REMOTE_ADDR="192.0.2.10", HTTP_ACCEPT="text/html")
    assert html.status_code == 429 and b"Too many attempts" in html.content
    assert client.post(path, data, REMOTE_ADDR="192.0.2.11").status_code != 429  # another address


def test_a_keys_refused_requests_do_not_use_up_its_orgs_budget(org, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "api_key": "2/minute", "org": "4/minute"}
    noisy, quiet = key_client(issue_key(org).secret), key_client(issue_key(org).secret)
    assert [noisy.get("/api/v1/me").status_code for _ in range(5)] == [200, 200, 429, 429, 429]
    # Only the noisy key's two answered requests counted against the org (its bucket is checked first).
    assert [quiet.get("/api/v1/me").status_code for _ in range(2)] == [200, 200]
