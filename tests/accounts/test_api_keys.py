import hashlib
import io
import secrets
from datetime import timedelta

import httpx2
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from accounts import services
from accounts.models import ApiKey, AuditEvent
from accounts.permissions import ROLE_SCOPES, Principal
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import MembershipFactory, OrganizationFactory

pytestmark = pytest.mark.django_db


def test_a_created_key_is_shown_once_stored_as_a_hash_and_works(org, admin_key):
    client = key_client(admin_key.secret)
    response = client.post("/api/v1/keys", {"name": "deploy bot", "scopes": ["read", "ask"]}, format="json")
    assert response.status_code == 201
    body = response.json()
    secret = body["key"]
    assert secret.startswith("cdk_live_") and len(secret) == len("cdk_live_") + 8 + 1 + 43
    assert body["prefix"] == secret[: len("cdk_live_") + 8]
    stored = ApiKey.all_orgs.get(pk=body["id"])
    assert stored.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert stored.created_by is None  # created with a key, owned by the org
    # Never again: not in the list, not in the detail.
    assert secret not in client.get("/api/v1/keys").content.decode()
    assert secret not in client.get(f"/api/v1/keys/{body['id']}").content.decode()
    me = key_client(secret).get("/api/v1/me", REMOTE_ADDR="203.0.113.7").json()
    assert me["key"] == {"name": "deploy bot", "prefix": body["prefix"]}
    assert me["scopes"] == ["ask", "read"]
    assert me["org"]["slug"] == org.slug
    stored.refresh_from_db()
    assert stored.last_used_at is not None and stored.last_used_ip == "203.0.113.7"


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("Bearer nonsense", "malformed_key"),
        ("Bearer cdk_live_AAAAAAAA_" + "x" * 43, "unknown_key"),
        ("Bearer ", "malformed_key"),
    ],
)
def test_bad_keys_get_401_with_the_error_shape(header, code, client):
    response = client.get("/api/v1/me", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == code


def test_no_credentials_at_all_is_a_401(client):
    response = client.get("/api/v1/me")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_revoked_and_expired_keys_are_refused(org, admin_key):
    issued = issue_key(org)
    key_client(admin_key.secret).post(f"/api/v1/keys/{issued.api_key.pk}/revoke")
    response = key_client(issued.secret).get("/api/v1/me")
    assert response.status_code == 401 and response.json()["error"]["code"] == "key_revoked"

    expiring = issue_key(org)
    _expire(expiring.api_key)
    response = key_client(expiring.secret).get("/api/v1/me")
    assert response.status_code == 401 and response.json()["error"]["code"] == "key_expired"


def _expire(api_key: ApiKey) -> None:
    api_key.refresh_from_db()
    api_key.expires_at = timezone.now() - timedelta(seconds=1)
    api_key.save(update_fields=["expires_at"])


def test_rotation_issues_a_new_key_and_keeps_the_old_one_for_the_grace_period(org, admin_key):
    old = issue_key(org, scopes=["read", "ask"], name="worker")
    response = key_client(admin_key.secret).post(
        f"/api/v1/keys/{old.api_key.pk}/rotate", {"grace_hours": 2}, format="json"
    )
    assert response.status_code == 201
    new_secret = response.json()["key"]
    assert response.json()["scopes"] == ["ask", "read"] and response.json()["name"] == "worker"
    assert key_client(new_secret).get("/api/v1/me").status_code == 200
    assert key_client(old.secret).get("/api/v1/me").status_code == 200  # still in its grace period
    old.api_key.refresh_from_db()
    assert old.api_key.status == "rotating"
    assert timedelta(hours=1, minutes=59) < old.api_key.expires_at - timezone.now() <= timedelta(hours=2)
    _expire(old.api_key)
    assert key_client(old.secret).get("/api/v1/me").status_code == 401
    again = key_client(admin_key.secret).post(f"/api/v1/keys/{old.api_key.pk}/rotate", {}, format="json")
    assert again.status_code == 409
    assert AuditEvent.all_orgs.filter(organization=org, action="api_key.rotated").count() == 1


def test_key_creation_validates_its_input(admin_key):
    client = key_client(admin_key.secret)
    before = ApiKey.all_orgs.count()
    for payload in (
        {"name": "x", "scopes": ["superuser"]},
        {"name": "x", "scopes": []},
        {"name": "", "scopes": ["read"]},
        {"name": "x", "scopes": ["read"], "expires_at": "2001-01-01T00:00:00Z"},
        {"name": "x", "scopes": "read"},
    ):
        response = client.post("/api/v1/keys", payload, format="json")
        assert response.status_code == 400, payload
        assert response.json()["error"]["code"] == "invalid"
    assert ApiKey.all_orgs.count() == before


def test_create_api_key_command_prints_only_the_key():
    org = OrganizationFactory(slug="acme")
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_key", "acme", "--name", "ci", "--scopes", "read", "ask", stdout=out, stderr=err)
    secret = out.getvalue().strip()
    assert "\n" not in secret and secret.startswith("cdk_live_")
    key = ApiKey.all_orgs.get(organization=org)
    assert key.scopes == ["ask", "read"] and key.name == "ci"
    assert key_client(secret).get("/api/v1/me").json()["org"]["slug"] == "acme"
    with pytest.raises(CommandError, match="scope"):
        call_command("create_api_key", "acme", "--name", "x", "--scopes", "everything", stdout=io.StringIO())
    with pytest.raises(CommandError, match="No org"):
        call_command("create_api_key", "nope", "--name", "x", stdout=io.StringIO())


def test_create_org_command_makes_the_owner():
    out = io.StringIO()
    call_command("create_org", "globex", "--owner", "Hank@Globex.example", stdout=out)
    membership = MembershipFactory._meta.model.all_orgs.get(organization__slug="globex")
    assert membership.user.email == "hank@globex.example" and membership.role == "owner"
    assert not membership.user.has_usable_password()
    with pytest.raises(CommandError, match="taken"):
        call_command("create_org", "globex", "--owner", "x@example.com", stdout=io.StringIO())


def test_a_key_seen_before_is_checked_from_memory_and_each_request_gets_its_own_objects(org, django_assert_num_queries):
    issued = issue_key(org)
    first = services.api_key_authenticate(secret=issued.secret, ip="192.0.2.1")
    with django_assert_num_queries(0):
        second = services.api_key_authenticate(secret=issued.secret, ip="192.0.2.1")
    assert second.pk == first.pk and second is not first and second.organization is not first.organization
    second.organization.name = "changed in one request"
    assert services.api_key_authenticate(secret=issued.secret, ip="192.0.2.1").organization.name == org.name


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_revoking_a_key_stops_it_at_once_on_a_live_server(daphne_server):
    org = OrganizationFactory()
    issued = issue_key(org)
    headers = {"Authorization": f"Bearer {issued.secret}"}
    assert httpx2.get(f"{daphne_server.url}/api/v1/me", headers=headers).status_code == 200  # now kept there
    services.api_key_revoke(
        principal=Principal(organization=org, scopes=ROLE_SCOPES["owner"]), key_id=issued.api_key.pk
    )
    response = httpx2.get(f"{daphne_server.url}/api/v1/me", headers=headers)
    assert response.status_code == 401 and response.json()["error"]["code"] == "key_revoked"


# --- Allowed networks and keys used from many networks (accounts/key_guard.py) ------------------------------


def _networks(client, key_id, networks):
    return client.post(f"/api/v1/keys/{key_id}/networks", {"allowed_networks": networks}, format="json")


def test_a_key_pinned_to_networks_works_inside_them_and_is_refused_outside(org, admin_key):
    admin = key_client(admin_key.secret)
    pinned = issue_key(org, scopes=["read"])
    response = _networks(admin, pinned.api_key.pk, ["203.0.113.0/24", "2001:db8::1/48"])
    assert response.status_code == 200, response.content
    assert response.json()["allowed_networks"] == ["203.0.113.0/24", "2001:db8::/48"]
    changed = AuditEvent.all_orgs.get(organization=org, action="api_key.networks_changed")
    assert changed.metadata == {"before": [], "after": ["203.0.113.0/24", "2001:db8::/48"]}

    client = key_client(pinned.secret)
    assert client.get("/api/v1/me", REMOTE_ADDR="203.0.113.9").status_code == 200
    assert client.get("/api/v1/me", REMOTE_ADDR="2001:db8:0:7::5").status_code == 200
    for _ in range(2):
        denied = client.get("/api/v1/me", REMOTE_ADDR="198.51.100.4")
        assert denied.status_code == 403
        error = denied.json()["error"]
        assert error["code"] == "ip_not_allowed" and error["details"] == {"ip": "198.51.100.4"} and error["request_id"]
    audited = AuditEvent.all_orgs.filter(organization=org, action="api_key.ip_denied")
    assert [(e.ip, e.target_id) for e in audited] == [("198.51.100.4", str(pinned.api_key.pk))]  # once an hour

    assert _networks(admin, pinned.api_key.pk, []).status_code == 200  # anywhere again
    assert client.get("/api/v1/me", REMOTE_ADDR="198.51.100.4").status_code == 200


def test_bad_networks_are_refused_and_change_nothing(org, admin_key):
    admin = key_client(admin_key.secret)
    key = issue_key(org)
    response = _networks(admin, key.api_key.pk, ["10.0.0.0/8", "10.0.0.0/33", "everywhere"])
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and "10.0.0.0/33, everywhere" in error["details"]["fields"]["allowed_networks"][0]
    assert ApiKey.all_orgs.get(pk=key.api_key.pk).allowed_networks == []
    assert not AuditEvent.all_orgs.filter(action="api_key.networks_changed").exists()


def test_only_admins_of_the_keys_org_set_networks(org, admin_key):
    other = issue_key(OrganizationFactory())
    assert _networks(key_client(admin_key.secret), other.api_key.pk, ["10.0.0.0/8"]).status_code == 404
    reader = issue_key(org, scopes=["read"])
    assert _networks(key_client(reader.secret), reader.api_key.pk, ["10.0.0.0/8"]).status_code == 403
    assert ApiKey.all_orgs.get(pk=other.api_key.pk).allowed_networks == []


def test_the_keys_page_sets_networks(client, org, make_member):
    owner = make_member(org, role="owner").user
    client.force_login(owner)
    key = issue_key(org)
    response = client.post(
        f"/o/{org.slug}/keys/{key.api_key.pk}/networks/", {"allowed_networks": "192.0.2.0/24\n10.1.0.0/16"}
    )
    assert response.status_code == 302
    assert ApiKey.all_orgs.get(pk=key.api_key.pk).allowed_networks == ["192.0.2.0/24", "10.1.0.0/16"]
    page = client.get(f"/o/{org.slug}/keys/")
    assert b"192.0.2.0/24, 10.1.0.0/16" in page.content


def test_a_key_used_from_many_networks_alerts_the_owners_once(org, make_member, settings):
    from accounts.models import Notification

    settings.API_KEY_NETWORKS_ALERT = 3
    owners = [make_member(org, role="owner").user for _ in range(2)]
    make_member(org, role="member")
    key = issue_key(org)
    client = key_client(key.secret)
    for i in range(3):  # three networks, each twice (another host of the same /24): not yet an alert
        assert client.get("/api/v1/me", REMOTE_ADDR=f"198.51.{i}.1").status_code == 200
        assert client.get("/api/v1/me", REMOTE_ADDR=f"198.51.{i}.200").status_code == 200
    assert not Notification.objects.for_org(org).exists()
    for i in range(3, 8):  # the fourth network crosses the line; more do not alert again
        assert client.get("/api/v1/me", REMOTE_ADDR=f"198.51.{i}.1").status_code == 200
    notes = Notification.objects.for_org(org)
    assert sorted(n.user_id for n in notes) == sorted(u.pk for u in owners)  # owners only, once each
    assert key.api_key.prefix in notes[0].title and "4 networks" in notes[0].title
    alert = AuditEvent.all_orgs.get(organization=org, action="api_key.many_networks")
    assert alert.metadata["networks"] == 4 and alert.target_id == str(key.api_key.pk)


def test_a_keys_steady_traffic_from_one_network_is_counted_once_a_minute(org, settings):
    from accounts import key_guard
    from saas.core.redis import get_redis

    settings.API_KEY_NETWORKS_ALERT = 3
    key = issue_key(org)
    client = key_client(key.secret)
    networks = f"{key_guard._prefix()}:networks:{key.api_key.pk}"
    assert client.get("/api/v1/me", REMOTE_ADDR="198.51.100.7").status_code == 200
    assert get_redis().smembers(networks) == {"198.51.100.0/24"}
    get_redis().delete(networks)
    assert client.get("/api/v1/me", REMOTE_ADDR="198.51.100.8").status_code == 200  # same /24, within the minute
    assert not get_redis().exists(networks)  # no round trip for it
    assert client.get("/api/v1/me", REMOTE_ADDR="203.0.113.9").status_code == 200  # a new network is counted
    assert get_redis().smembers(networks) == {"203.0.113.0/24"}


def test_the_keys_page_says_where_clients_reach_the_api(client, org, make_member, settings):
    """API_URL: the API server's address (make run: port 8001), on the page and with a new key."""
    settings.API_URL = "https://api.crewdesk.example"
    client.force_login(make_member(org, role="owner").user)
    page = client.get(f"/o/{org.slug}/keys/").content.decode()
    assert "https://api.crewdesk.example/api/v1/" in page and "https://api.crewdesk.example/v1" in page
    created = client.post(f"/o/{org.slug}/keys/", {"name": "ci", "scopes": ["read"], "nonce": secrets.token_hex(8)})
    assert 'data-testid="api-url">https://api.crewdesk.example/api/v1/<' in created.content.decode()
