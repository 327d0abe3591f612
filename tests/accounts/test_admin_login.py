"""The Django admin signs in through allauth: its two-factor step and its rate limits apply (issue #14)."""

import time

import pytest
from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, generate_totp_secret, hotp_value
from django.core.cache import cache

from tests.accounts.factories import UserFactory

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def fresh_counters():
    cache.clear()  # rate-limit counters of earlier tests must not count here
    yield
    cache.clear()


def _code(secret: str) -> str:
    return format_hotp_value(hotp_value(secret, int(time.time()) // 30))


def _sign_in_through_admin(client, email: str, password: str):
    """What a browser does: open /admin/login/, follow it to the sign-in form, post the password."""
    page = client.get("/admin/login/?next=/admin/")
    assert page.status_code == 302 and page["Location"].startswith("/accounts/login/"), page
    return client.post(page["Location"], {"login": email, "password": password})


def test_the_admin_login_page_no_longer_checks_passwords_itself(client):
    staff = UserFactory(is_staff=True, is_superuser=True)
    response = client.post("/admin/login/?next=/admin/", {"username": staff.email, "password": PASSWORD})
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/").status_code == 302


def test_staff_with_totp_cannot_reach_the_admin_with_the_password_alone(client):
    staff = UserFactory(is_staff=True, is_superuser=True)
    secret = generate_totp_secret()
    TOTP.activate(staff, secret)
    response = _sign_in_through_admin(client, staff.email, PASSWORD)
    assert response.status_code == 302 and "/2fa/authenticate" in response["Location"]
    assert "_auth_user_id" not in client.session
    admin = client.get("/admin/")
    assert admin.status_code == 302 and "/login/" in admin["Location"]
    # The old admin form does not accept the password either: it hands over to allauth.
    client.post("/admin/login/", {"username": staff.email, "password": PASSWORD})
    assert "_auth_user_id" not in client.session
    # With the second factor, the admin opens.
    done = client.post(response["Location"], {"code": _code(secret)})
    assert done.status_code == 302 and done["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_staff_without_two_factor_still_signs_in(client):
    staff = UserFactory(is_staff=True, is_superuser=True)
    response = _sign_in_through_admin(client, staff.email, PASSWORD)
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_non_staff_cannot_reach_the_admin(client):
    user = UserFactory()
    response = _sign_in_through_admin(client, user.email, PASSWORD)
    assert response.status_code == 302  # signed in to the product ...
    assert client.get("/admin/").status_code in (302, 403)  # ... but not to the admin
    assert client.get("/admin/login/").status_code == 403
    assert client.get("/admin/accounts/user/").status_code in (302, 403)


def test_repeated_wrong_passwords_at_the_admin_login_end_in_429(client):
    staff = UserFactory(is_staff=True, is_superuser=True)
    statuses = []
    for _ in range(40):
        page = client.get("/admin/login/?next=/admin/")
        statuses.append(client.post(page["Location"], {"login": staff.email, "password": "wrong"}).status_code)
        if statuses[-1] == 429:
            break
    assert statuses[-1] == 429, statuses
    assert "_auth_user_id" not in client.session
