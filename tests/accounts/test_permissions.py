"""Every role against every admin action, through the API with a session (the browser's own calls) and
through the browser pages. Allowed actions change data; refused ones leave it as it was."""

import pytest
from django.core import mail

from accounts.models import ApiKey, AuditEvent, Invitation, Membership
from billing.catalogue import sync_plans
from billing.models import OrgBilling, Plan
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import InvitationFactory

pytestmark = pytest.mark.django_db

OWNER, ADMIN, MEMBER, VIEWER = "owner", "admin", "member", "viewer"
ROLES = [OWNER, ADMIN, MEMBER, VIEWER]


@pytest.fixture
def world(org, make_member):
    """An org with one member of each role, a target member, an invitation and a key to act on, on a plan with
    room for them all (the members limit has its own tests in tests/billing)."""
    sync_plans(Plan)
    OrgBilling.objects.for_org(org).create(organization=org, plan=Plan.objects.get(slug="team"), status="active")
    people = {role: make_member(org, role=role) for role in ROLES}
    people["second_owner"] = make_member(org, role=OWNER)
    target = make_member(org, role=MEMBER)
    invitation = InvitationFactory(organization=org)
    key = issue_key(org, scopes=["read"]).api_key
    return {"org": org, "people": people, "target": target, "invitation": invitation, "key": key}


def _actions(world):
    target, invitation, key = world["target"], world["invitation"], world["key"]
    return {
        "view members": ("get", "/api/v1/members", None, {OWNER, ADMIN, MEMBER, VIEWER}),
        "invite": (
            "post",
            "/api/v1/invitations",
            {"email": "new@example.com", "role": "member"},
            {OWNER, ADMIN},
        ),
        "invite an owner": (
            "post",
            "/api/v1/invitations",
            {"email": "boss@example.com", "role": "owner"},
            {OWNER},
        ),
        "list invitations": ("get", "/api/v1/invitations", None, {OWNER, ADMIN}),
        "revoke invitation": ("delete", f"/api/v1/invitations/{invitation.pk}", None, {OWNER, ADMIN}),
        "change role": ("patch", f"/api/v1/members/{target.pk}", {"role": "viewer"}, {OWNER, ADMIN}),
        "make owner": ("patch", f"/api/v1/members/{target.pk}", {"role": "owner"}, {OWNER}),
        "remove member": ("delete", f"/api/v1/members/{target.pk}", None, {OWNER, ADMIN}),
        "list keys": ("get", "/api/v1/keys", None, {OWNER, ADMIN}),
        "create key": ("post", "/api/v1/keys", {"name": "ci", "scopes": ["read"]}, {OWNER, ADMIN}),
        "rotate key": ("post", f"/api/v1/keys/{key.pk}/rotate", {}, {OWNER, ADMIN}),
        "revoke key": ("post", f"/api/v1/keys/{key.pk}/revoke", None, {OWNER, ADMIN}),
        "change settings": ("patch", "/api/v1/org", {"name": "Renamed"}, {OWNER, ADMIN}),
        "view audit log": ("get", "/api/v1/audit-events", None, {OWNER, ADMIN}),
        "transfer ownership": (
            "post",
            "/api/v1/org/transfer-ownership",
            {"member_id": str(target.pk)},
            {OWNER},
        ),
    }


def _state(world):
    org = world["org"]
    return (
        sorted(Membership.all_orgs.filter(organization=org).values_list("id", "role")),
        sorted(Invitation.all_orgs.filter(organization=org).values_list("id", "revoked_at")),
        sorted(ApiKey.all_orgs.filter(organization=org).values_list("id", "revoked_at", "expires_at")),
        org.__class__.objects.get(pk=org.pk).name,
    )


ACTION_NAMES = [
    "view members", "invite", "invite an owner", "list invitations", "revoke invitation", "change role",
    "make owner", "remove member", "list keys", "create key", "rotate key", "revoke key", "change settings",
    "view audit log", "transfer ownership",
]  # fmt: skip


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", ACTION_NAMES)
def test_role_against_action(world, session_client, role, action):
    method, path, payload, allowed = _actions(world)[action]
    client = session_client(world["people"][role].user)
    before = _state(world)
    response = (
        getattr(client, method)(path, payload, format="json") if payload is not None else getattr(client, method)(path)
    )
    if role in allowed:
        assert response.status_code in (200, 201, 204), (role, action, response.status_code, response.content)
        if method != "get":
            assert _state(world) != before, f"{action} by {role} answered OK but changed nothing"
            assert AuditEvent.all_orgs.filter(organization=world["org"], actor_user=world["people"][role].user).exists()
    else:
        assert response.status_code == 403, (role, action, response.status_code, response.content)
        assert response.json()["error"]["code"] in ("insufficient_role", "permission_denied")
        assert _state(world) == before, f"{action} by {role} was refused but changed data"


@pytest.mark.parametrize(
    ("scopes", "path", "allowed"),
    [
        (["read"], "/api/v1/members", True),
        (["read"], "/api/v1/keys", False),
        (["ask"], "/api/v1/members", False),
        (["admin"], "/api/v1/keys", True),
        (["admin"], "/api/v1/audit-events", True),
    ],
)
def test_key_scopes_gate_the_api(org, scopes, path, allowed):
    client = key_client(issue_key(org, scopes=scopes).secret)
    response = client.get(path)
    assert response.status_code == (200 if allowed else 403)
    if not allowed:
        assert response.json()["error"]["code"] == "missing_scope"


def test_no_key_can_act_as_owner(org, admin_key, make_member):
    target = make_member(org, role=MEMBER)
    client = key_client(admin_key.secret)
    response = client.post("/api/v1/org/transfer-ownership", {"member_id": str(target.pk)}, format="json")
    assert response.status_code == 403
    assert client.patch(f"/api/v1/members/{target.pk}", {"role": "owner"}, format="json").status_code == 403


def test_the_last_owner_cannot_be_demoted_removed_or_leave(org, make_member, session_client):
    owner = make_member(org, role=OWNER)
    client = session_client(owner.user)
    response = client.patch(f"/api/v1/members/{owner.pk}", {"role": "admin"}, format="json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "last_owner"
    assert client.delete(f"/api/v1/members/{owner.pk}").status_code == 409
    owner.refresh_from_db()
    assert owner.role == OWNER


def test_transfer_ownership_swaps_roles(org, make_member, session_client):
    owner, admin = make_member(org, role=OWNER), make_member(org, role=ADMIN)
    response = session_client(owner.user).post(
        "/api/v1/org/transfer-ownership", {"member_id": str(admin.pk)}, format="json"
    )
    assert response.status_code == 200
    owner.refresh_from_db()
    admin.refresh_from_db()
    assert (owner.role, admin.role) == (ADMIN, OWNER)


def test_any_member_may_leave(org, make_member, session_client):
    make_member(org, role=OWNER)
    viewer = make_member(org, role=VIEWER)
    assert session_client(viewer.user).delete(f"/api/v1/members/{viewer.pk}").status_code == 204
    assert not Membership.all_orgs.filter(pk=viewer.pk).exists()


@pytest.mark.parametrize("role", ROLES)
def test_browser_pages_follow_the_same_roles(world, role, client, django_capture_on_commit_callbacks):
    org = world["org"]
    client.force_login(world["people"][role].user)
    pages = {
        f"/o/{org.slug}/": {OWNER, ADMIN, MEMBER, VIEWER},
        f"/o/{org.slug}/members/": {OWNER, ADMIN, MEMBER, VIEWER},
        f"/o/{org.slug}/settings/": {OWNER, ADMIN, MEMBER, VIEWER},
        f"/o/{org.slug}/keys/": {OWNER, ADMIN},
        f"/o/{org.slug}/audit/": {OWNER, ADMIN},
    }
    for path, allowed in pages.items():
        assert client.get(path).status_code == (200 if role in allowed else 403), path
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/o/{org.slug}/members/invite/", {"email": "x@example.com", "role": "member"})
    if role in (OWNER, ADMIN):
        assert response.status_code == 302 and len(mail.outbox) == 1
    else:
        assert response.status_code == 403 and not mail.outbox
    members_page = client.get(f"/o/{org.slug}/members/").content.decode()
    assert ("Send invitation" in members_page) == (role in (OWNER, ADMIN))
    nav = client.get(f"/o/{org.slug}/").content.decode()
    assert ("API keys" in nav) == (role in (OWNER, ADMIN))
