"""Failed sign-ins count per (account, client address) and per address across accounts (issue #14): a stranger's
wrong passwords lock out only the stranger; the owner signing in from their own address is unaffected."""

import pytest
from django.core.cache import cache
from django.test import Client

from tests.accounts.factories import UserFactory

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery staple"
STRANGER, OWNER_IP, ELSEWHERE = "198.51.100.66", "203.0.113.10", "192.0.2.77"


@pytest.fixture(autouse=True)
def fresh_counters():
    cache.clear()
    yield
    cache.clear()


def _sign_in(client, email, password, ip):
    return client.post("/accounts/login/", {"login": email, "password": password}, REMOTE_ADDR=ip)


def test_a_strangers_wrong_passwords_do_not_lock_the_owner_out():
    owner = UserFactory()
    stranger = Client()
    statuses = [_sign_in(stranger, owner.email, f"guess-{i}", STRANGER).status_code for i in range(20)]
    assert statuses[-1] == 429, statuses  # the stranger is refused ...
    assert 302 not in statuses
    # ... even with the right password, from that address, for now
    assert _sign_in(stranger, owner.email, PASSWORD, STRANGER).status_code == 429

    me = Client()
    response = _sign_in(me, owner.email, PASSWORD, OWNER_IP)
    assert response.status_code == 302 and "/accounts/" not in response["Location"]
    assert me.session["_auth_user_id"] == str(owner.pk)


def test_the_per_account_count_is_per_address(settings):
    """With the per-address limits out of the way, only the (account, address) count remains: it refuses the
    stranger after five failures and leaves the owner's address alone."""
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "auth_ip": "1000/minute"}
    settings.ACCOUNT_RATE_LIMITS = {**settings.ACCOUNT_RATE_LIMITS, "login_failed": "1000/m/ip,5/5m/key", "login": ""}
    owner = UserFactory()
    stranger = Client()
    statuses = [_sign_in(stranger, owner.email, "wrong", STRANGER).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    assert _sign_in(Client(), owner.email, "wrong", ELSEWHERE).status_code == 200  # a fresh count elsewhere
    me = Client()
    assert _sign_in(me, owner.email, PASSWORD, OWNER_IP).status_code == 302
    assert me.session["_auth_user_id"] == str(owner.pk)


def test_wrong_passwords_across_many_accounts_from_one_address_are_refused(settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "auth_ip": "1000/minute"}
    users = [UserFactory() for _ in range(12)]
    stuffer = Client()
    statuses = [_sign_in(stuffer, user.email, "Summer2026!", STRANGER).status_code for user in users]
    assert statuses[:10] == [200] * 10 and statuses[-1] == 429
    assert _sign_in(Client(), users[-1].email, PASSWORD, OWNER_IP).status_code == 302
