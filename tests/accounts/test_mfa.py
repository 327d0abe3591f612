"""Optional TOTP two-factor sign-in (allauth MFA): activate with a real code, then sign-in asks for one."""

import time

import pytest
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import SECRET_SESSION_KEY, format_hotp_value, hotp_value

from tests.accounts.factories import UserFactory

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery staple"


def _code(secret: str) -> str:
    return format_hotp_value(hotp_value(secret, int(time.time()) // 30))


def test_totp_can_be_activated_and_is_then_required_at_sign_in(client):
    user = UserFactory(email="careful@example.com")
    assert client.post("/accounts/login/", {"login": user.email, "password": PASSWORD}).status_code == 302
    page = client.get("/accounts/2fa/totp/activate/")
    if page.status_code == 302 and "reauthenticate" in page["Location"]:  # sensitive: confirm the password
        client.post(page["Location"], {"password": PASSWORD})
        page = client.get("/accounts/2fa/totp/activate/")
    assert page.status_code == 200, page.get("Location")
    secret = client.session[SECRET_SESSION_KEY]
    assert (
        client.post(
            "/accounts/2fa/totp/activate/", {"code": "000000" if _code(secret) != "000000" else "111111"}
        ).status_code
        == 200
    )
    assert not Authenticator.objects.filter(user=user).exists()  # a wrong code activates nothing
    response = client.post("/accounts/2fa/totp/activate/", {"code": _code(secret)})
    assert response.status_code == 302
    assert Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists()

    client.logout()
    response = client.post("/accounts/login/", {"login": user.email, "password": PASSWORD})
    assert response.status_code == 302 and "/2fa/authenticate" in response["Location"]
    assert client.get("/api/v1/me").status_code == 401  # not signed in until the second factor
    response = client.post(response["Location"], {"code": _code(secret)})
    assert response.status_code == 302
    assert "_auth_user_id" in client.session
