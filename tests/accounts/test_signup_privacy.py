"""Sign-up and password reset do not say which addresses have an account (issue #14)."""

import re

import pytest
from django.core import mail
from django.core.cache import cache
from django.test import Client

from accounts.models import Membership, User
from tests.accounts.factories import UserFactory

pytestmark = pytest.mark.django_db
PASSPHRASE = "an-excellent-passphrase"


@pytest.fixture(autouse=True)
def fresh_counters():
    cache.clear()
    yield
    cache.clear()


def _sign_up(email, ip="192.0.2.1"):
    client = Client()
    data = {"email": email, "password1": PASSPHRASE, "password2": PASSPHRASE}
    response = client.post("/accounts/signup/", data, REMOTE_ADDR=ip)
    follow = client.get(response["Location"], REMOTE_ADDR=ip) if response.status_code == 302 else None
    return client, response, follow


def _page(response, typed: str) -> str:
    """The page, less its CSRF token, its CSP nonces and the address the visitor typed (shown back to them)."""
    page = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"|nonce="[^"]+"', "", response.content.decode())
    return page.replace(typed, "<typed>")


def test_sign_up_answers_the_same_for_a_new_and_an_existing_address():
    existing = UserFactory(email="known@example.com")
    _, new, new_page = _sign_up("fresh@example.com", ip="192.0.2.1")
    _, old, old_page = _sign_up("Known@example.com", ip="192.0.2.2")
    assert (new.status_code, new["Location"]) == (old.status_code, old["Location"]) == (302, "/accounts/confirm-email/")
    assert new_page.status_code == old_page.status_code == 200
    assert _page(new_page, "fresh@example.com") == _page(old_page, "known@example.com")
    # Nothing was created for the known address; its owner is told by email instead.
    assert User.objects.filter(email__iexact="known@example.com").count() == 1
    assert not Membership.all_orgs.filter(user=existing).exists()
    by_recipient = {m.to[0]: m for m in mail.outbox}
    assert set(by_recipient) == {"fresh@example.com", "known@example.com"}
    assert "already" in by_recipient["known@example.com"].body.lower()
    assert "/accounts/confirm-email/" in by_recipient["fresh@example.com"].body


def test_a_new_account_is_signed_in_by_its_confirmation_link():
    client, _response, _ = _sign_up("ada@example.com")
    assert "_auth_user_id" not in client.session  # not before the address is proven
    membership = Membership.all_orgs.select_related("organization").get(user__email="ada@example.com")
    assert membership.role == "owner" and membership.organization.name == "ada's team"
    link = re.search(r"https?://[^/\s]+(/accounts/confirm-email/[^\s]+)", mail.outbox[-1].body).group(1)
    assert client.post(link).status_code == 302
    assert client.session["_auth_user_id"] == str(membership.user_id)
    home = client.get("/")
    assert home.status_code == 302 and home["Location"] == f"/o/{membership.organization.slug}/"


def test_password_reset_answers_the_same_for_a_known_and_an_unknown_address():
    UserFactory(email="known@example.com")
    known = Client().post("/accounts/password/reset/", {"email": "known@example.com"}, REMOTE_ADDR="192.0.2.3")
    unknown = Client().post("/accounts/password/reset/", {"email": "nobody@example.com"}, REMOTE_ADDR="192.0.2.4")
    assert (known.status_code, known["Location"]) == (unknown.status_code, unknown["Location"])
    assert known.status_code == 302
    assert {m.to[0] for m in mail.outbox} == {"known@example.com", "nobody@example.com"}
