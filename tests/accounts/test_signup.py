import pytest

from accounts.models import AuditEvent, Membership

pytestmark = pytest.mark.django_db


def test_signup_creates_a_personal_org_owned_by_the_new_user(client):
    response = client.post(
        "/accounts/signup/",
        {
            "email": "ada@example.com",
            "password1": "an-excellent-passphrase",
            "password2": "an-excellent-passphrase",
        },
    )
    assert response.status_code == 302
    membership = Membership.all_orgs.select_related("organization").get(user__email="ada@example.com")
    assert membership.role == "owner"
    assert membership.organization.name == "ada's team"
    assert AuditEvent.all_orgs.filter(organization=membership.organization, action="org.created").exists()
    # Signed in once the address is confirmed: tests/accounts/test_signup_privacy.py.


def test_two_users_with_the_same_local_part_get_distinct_slugs(client):
    for email in ("sam@one.example", "sam@two.example"):
        client.post(
            "/accounts/signup/",
            {"email": email, "password1": "another-fine-passphrase", "password2": "another-fine-passphrase"},
        )
        client.logout()
    slugs = set(Membership.all_orgs.values_list("organization__slug", flat=True))
    assert len(slugs) == 2


def test_a_user_can_create_and_switch_between_orgs(client, make_member, org):
    member = make_member(org, role="member")
    client.force_login(member.user)
    response = client.post("/orgs/new/", {"name": "Side project", "slug": "side-project"})
    assert response.status_code == 302 and response["Location"] == "/o/side-project/"
    assert client.get("/").headers["Location"] == "/o/side-project/"  # the last one opened
    client.get(f"/o/{org.slug}/")
    assert client.get("/").headers["Location"] == f"/o/{org.slug}/"
    page = client.get(f"/o/{org.slug}/").content.decode()
    assert "Side project" in page and org.name in page  # both in the switcher
    assert client.post("/orgs/new/", {"name": "Dup", "slug": "side-project"}).status_code == 200
