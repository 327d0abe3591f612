import pytest
from django.db import DatabaseError, transaction

from accounts.models import AuditEvent
from tests.accounts.conftest import key_client
from tests.accounts.factories import AuditEventFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_admin_actions_are_recorded_with_actor_ip_and_request_id(org, admin_key):
    client = key_client(admin_key.secret)
    response = client.post(
        "/api/v1/keys", {"name": "ci", "scopes": ["read"]}, format="json",
        REMOTE_ADDR="198.51.100.4", HTTP_USER_AGENT="curl/8", HTTP_X_REQUEST_ID="6f1c0c7e-8f21-4a2b-9a55-3d3c1c9b2a10",
    )  # fmt: skip
    assert response.status_code == 201
    event = AuditEvent.all_orgs.get(organization=org, action="api_key.created", target_id=response.json()["id"])
    assert event.actor_api_key == admin_key.api_key and event.actor_label == f"API key {admin_key.api_key.prefix}"
    assert (event.ip, event.user_agent) == ("198.51.100.4", "curl/8")
    assert event.request_id == "6f1c0c7e-8f21-4a2b-9a55-3d3c1c9b2a10"
    assert event.metadata["scopes"] == ["read"]


def test_the_database_refuses_to_change_or_delete_audit_events(org):
    event = AuditEventFactory(organization=org)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.all_orgs.filter(pk=event.pk).update(action="tampered")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.all_orgs.filter(pk=event.pk).delete()
    event.refresh_from_db()
    assert event.action == "test.event"


def test_the_admin_site_is_read_only_for_audit_events(admin_client, org):
    event = AuditEventFactory(organization=org)
    assert admin_client.get("/admin/accounts/auditevent/").status_code == 200
    assert admin_client.get("/admin/accounts/auditevent/add/").status_code == 403
    assert admin_client.post(f"/admin/accounts/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEvent.all_orgs.filter(pk=event.pk).exists()


def test_the_audit_api_filters_and_paginates(org, admin_key):
    for i in range(5):
        AuditEventFactory(organization=org, action="member.role_changed", actor_label=f"user{i}@example.com")
    AuditEventFactory(organization=org, action="invitation.created", actor_label="boss@example.com")
    client = key_client(admin_key.secret)
    body = client.get("/api/v1/audit-events", {"action": "member.", "page_size": 2}).json()
    assert len(body["results"]) == 2 and body["next"]
    assert {e["action"] for e in body["results"]} == {"member.role_changed"}
    seen = [e["id"] for e in body["results"]]
    while body["next"]:
        body = client.get(body["next"]).json()
        seen += [e["id"] for e in body["results"]]
    assert len(seen) == len(set(seen)) == 5
    only_boss = client.get("/api/v1/audit-events", {"actor": "boss"}).json()["results"]
    assert [e["action"] for e in only_boss] == ["invitation.created"]
    assert client.get("/api/v1/audit-events", {"since": "yesterday"}).status_code == 400
    assert client.get("/api/v1/audit-events", {"bogus": "1"}).json()["error"]["code"] == "invalid"


def test_sign_ins_are_audited_in_every_org_of_the_user(client, make_member, org):
    user = UserFactory(email="signer@example.com")
    make_member(org, user=user)
    from tests.accounts.factories import OrganizationFactory

    other = OrganizationFactory()
    make_member(other, user=user)
    response = client.post(
        "/accounts/login/", {"login": "signer@example.com", "password": "correct horse battery staple"}
    )
    assert response.status_code == 302
    assert AuditEvent.all_orgs.filter(action="user.signed_in", actor_user=user).count() == 2
    client.logout()
    client.post("/accounts/login/", {"login": "signer@example.com", "password": "wrong"})
    assert AuditEvent.all_orgs.filter(action="user.sign_in_failed", actor_user=user).count() == 2


def test_the_audit_page_lists_and_filters(client, org, make_member):
    admin = make_member(org, role="admin")
    AuditEventFactory(organization=org, action="api_key.revoked", actor_label="someone@example.com")
    AuditEventFactory(organization=org, action="org.settings_changed", actor_label="other@example.com")
    client.force_login(admin.user)
    page = client.get(f"/o/{org.slug}/audit/", {"action": "api_key.revoked"}).content.decode()
    assert "someone@example.com" in page and "other@example.com" not in page
