"""The client's address behind proxies: X-Forwarded-For believed only as far as trusted proxies wrote it, and the
same address in per-IP rate limits, the audit log, API keys' last use and the ASGI scope."""

import asyncio
import concurrent.futures
import secrets

import pytest

from accounts.models import ApiKey, AuditEvent
from saas.core.client_ip import ClientAddressMiddleware, resolve_client_ip
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import OrganizationFactory

LB = "10.0.0.5"  # the load balancer, in the trusted network below


@pytest.fixture
def behind_proxy(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "fd00::/8"]


def _client() -> str:
    """A fresh documentation address per test: rate-limit counters of earlier runs never count here."""
    return f"203.0.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("198.51.100.9", "203.0.113.7", "198.51.100.9"),  # an untrusted peer's header is ignored
        (LB, None, LB),  # no header: the proxy itself (a health check)
        (LB, "203.0.113.7", "203.0.113.7"),
        (LB, "1.2.3.4, 203.0.113.7", "203.0.113.7"),  # the client's own entry on the left proves nothing
        (LB, "203.0.113.7, 10.9.9.9", "203.0.113.7"),  # two trusted hops are skipped
        (LB, "203.0.113.7:5123", "203.0.113.7"),
        (LB, "[2001:db8::1]:443", "2001:db8::1"),
        (LB, "not-an-ip, 10.1.1.1", "10.1.1.1"),  # garbage stops the walk at the last trusted hop
        ("fd00::2", "2001:db8::7", "2001:db8::7"),
        ("::ffff:10.0.0.5", "203.0.113.7", "203.0.113.7"),  # IPv4-mapped peer
        (None, "203.0.113.7", None),
    ],
)
def test_the_forwarded_chain_is_walked_from_the_right(behind_proxy, peer, forwarded, expected):
    assert resolve_client_ip(peer, forwarded) == expected


def test_without_trusted_proxies_the_header_is_ignored(settings):
    settings.TRUSTED_PROXIES = []
    assert resolve_client_ip(LB, "203.0.113.7") == LB


@pytest.mark.django_db
def test_a_spoofed_header_from_an_untrusted_peer_does_not_buy_a_fresh_bucket(client, settings, behind_proxy):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "auth_ip": "2/minute"}
    peer = _client()
    data = {"login": "x@example.com", "password": "nope"}
    statuses = [
        client.post("/accounts/login/", data, REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR=_client()).status_code
        for _ in range(3)
    ]
    assert statuses[:2] != [429, 429] and statuses[2] == 429


@pytest.mark.django_db
def test_behind_a_trusted_proxy_each_client_has_its_own_bucket(client, settings, behind_proxy):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "auth_ip": "2/minute"}
    first, second = _client(), _client()
    data = {"login": "x@example.com", "password": "nope"}

    def post(ip: str) -> int:
        return client.post("/accounts/login/", data, REMOTE_ADDR=LB, HTTP_X_FORWARDED_FOR=f"{ip}, 10.2.3.4").status_code

    assert [post(first) for _ in range(3)][2] == 429
    assert post(second) != 429  # the same balancer, another client


@pytest.mark.django_db
def test_the_audit_row_and_the_key_show_the_real_client(behind_proxy):
    org = OrganizationFactory()
    client = key_client(issue_key(org, scopes=["read", "admin"]).secret)
    real = _client()
    response = client.post(
        "/api/v1/keys", {"name": "ci", "scopes": ["read"]}, format="json", REMOTE_ADDR=LB, HTTP_X_FORWARDED_FOR=real
    )
    assert response.status_code == 201, response.content
    event = AuditEvent.all_orgs.filter(organization=org, action="api_key.created").exclude(ip=None).get()
    assert event.ip == real
    used = ApiKey.all_orgs.filter(organization=org).exclude(last_used_ip=None).get()
    assert used.last_used_ip == real


@pytest.mark.django_db
def test_the_audit_row_of_an_untrusted_peer_shows_the_peer(settings):
    settings.TRUSTED_PROXIES = []
    org = OrganizationFactory()
    client = key_client(issue_key(org, scopes=["read", "admin"]).secret)
    response = client.post(
        "/api/v1/keys",
        {"name": "ci", "scopes": ["read"]},
        format="json",
        REMOTE_ADDR=LB,
        HTTP_X_FORWARDED_FOR="1.2.3.4",
    )
    assert response.status_code == 201
    assert AuditEvent.all_orgs.filter(organization=org, action="api_key.created").exclude(ip=None).get().ip == LB


def test_the_asgi_scope_carries_the_resolved_client(behind_proxy):
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["client"])

    middleware = ClientAddressMiddleware(app)
    for kind in ("http", "websocket"):
        scope = {"type": kind, "client": [LB, 40000], "headers": [(b"x-forwarded-for", b"203.0.113.7")]}
        _run_apart(middleware(scope, None, None))
    spoofed = {"type": "websocket", "client": ["198.51.100.9", 40000], "headers": [(b"x-forwarded-for", b"1.2.3.4")]}
    _run_apart(middleware(spoofed, None, None))
    assert seen == [["203.0.113.7", 0], ["203.0.113.7", 0], ["198.51.100.9", 40000]]


def _run_apart(coroutine):
    """In a thread of its own: the session's browser (Playwright) may keep an event loop in the main thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
