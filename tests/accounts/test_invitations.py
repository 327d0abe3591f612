import re
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from accounts.models import AuditEvent, Invitation, Membership
from tests.accounts.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def invite(org, make_member, session_client, django_capture_on_commit_callbacks):
    admin = make_member(org, role="admin")

    def send(email="newbie@example.com", role="member"):
        mail.outbox.clear()
        with django_capture_on_commit_callbacks(execute=True):
            response = session_client(admin.user).post(
                "/api/v1/invitations", {"email": email, "role": role}, format="json"
            )
        assert response.status_code == 201, response.content
        assert "token" not in response.json()
        (message,) = mail.outbox
        token = re.search(r"/invitations/([\w-]+)/", message.body).group(1)
        return response.json(), token

    return send


def test_an_invitation_is_emailed_and_accepted_once(org, invite, client):
    invitation, token = invite("Newbie@Example.com", "viewer")
    assert invitation["email"] == "newbie@example.com" and invitation["status"] == "pending"
    user = UserFactory(email="newbie@example.com")
    client.force_login(user)
    page = client.get(f"/invitations/{token}/")
    assert page.status_code == 200 and org.name in page.content.decode()
    response = client.post(f"/invitations/{token}/")
    assert response.status_code == 302 and response["Location"] == f"/o/{org.slug}/"
    membership = Membership.all_orgs.get(organization=org, user=user)
    assert membership.role == "viewer"
    assert AuditEvent.all_orgs.filter(organization=org, action="invitation.accepted").count() == 1
    replay = client.post(f"/invitations/{token}/")
    assert replay.status_code == 410
    assert "already been used" in replay.content.decode()
    assert Membership.all_orgs.filter(organization=org, user=user).count() == 1


def test_an_invitation_for_someone_else_is_refused(org, invite, client):
    _, token = invite("alice@example.com")
    client.force_login(UserFactory(email="mallory@example.com"))
    response = client.post(f"/invitations/{token}/")
    assert response.status_code == 403
    assert not Membership.all_orgs.filter(organization=org, user__email="mallory@example.com").exists()
    assert Invitation.all_orgs.get(email="alice@example.com").accepted_at is None


def test_expired_revoked_and_unknown_tokens(org, invite, client, session_client, make_member):
    client.force_login(UserFactory(email="late@example.com"))
    invitation, token = invite("late@example.com")
    Invitation.all_orgs.filter(pk=invitation["id"]).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert client.post(f"/invitations/{token}/").status_code == 410

    invitation, token = invite("late@example.com")  # re-inviting issues a fresh one
    owner = make_member(org, role="owner")
    assert session_client(owner.user).delete(f"/api/v1/invitations/{invitation['id']}").status_code == 204
    response = client.post(f"/invitations/{token}/")
    assert response.status_code == 410 and "withdrawn" in response.content.decode()

    assert client.get("/invitations/not-a-real-token/").status_code == 404
    assert client.get("/invitations/" + "x" * 300 + "/").status_code == 404
    assert not Membership.all_orgs.filter(organization=org, user__email="late@example.com").exists()


def test_reinviting_replaces_the_open_invitation(invite):
    first, first_token = invite("twice@example.com")
    _, second_token = invite("twice@example.com")
    assert first_token != second_token
    assert Invitation.all_orgs.get(pk=first["id"]).revoked_at is not None
    assert Invitation.all_orgs.filter(email="twice@example.com", revoked_at__isnull=True).count() == 1


def test_members_cannot_be_invited_again(org, make_member, session_client):
    admin = make_member(org, role="admin")
    existing = make_member(org)
    response = session_client(admin.user).post(
        "/api/v1/invitations", {"email": existing.user.email.upper(), "role": "member"}, format="json"
    )
    assert response.status_code == 409 and response.json()["error"]["code"] == "already_member"


def test_an_anonymous_visitor_is_sent_to_sign_up_or_in(invite, client):
    _, token = invite("fresh@example.com")
    page = client.get(f"/invitations/{token}/").content.decode()
    assert "Create an account" in page and "fresh%40example.com" in page
    response = client.post(f"/invitations/{token}/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
