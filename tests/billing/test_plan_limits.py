"""Plan limits besides AI requests and storage: members (members plus open invitations stop at the limit, on
invitation and on acceptance, with a 402 naming the limit and where to upgrade) and the chat models a plan includes."""

import pytest
from rest_framework.test import APIClient

from accounts import invitations
from accounts.models import Invitation, Membership
from accounts.permissions import ROLE_SCOPES, Principal
from billing.catalogue import sync_plans
from billing.models import OrgBilling, Plan
from saas.core.errors import ApplicationError
from tests.accounts.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_invitations_stop_at_the_free_plans_members_limit():
    sync_plans(Plan)  # Free: 3 members
    admin = MembershipFactory(role="admin")
    org = admin.organization
    MembershipFactory(organization=org)
    client = APIClient()
    client.force_login(admin.user)
    assert client.post("/api/v1/invitations", {"email": "third@example.com", "role": "member"}).status_code == 201
    refused = client.post("/api/v1/invitations", {"email": "fourth@example.com", "role": "member"})
    assert refused.status_code == 402, refused.content
    error = refused.json()["error"]
    assert error["code"] == "members_limit" and error["details"]["allowed"] == 3
    assert error["details"]["upgrade_url"] == f"/o/{org.slug}/billing/"
    assert "allows 3 members (2 now, 1 invited)" in error["message"]
    # Inviting the same person again replaces their invitation: it takes no second seat.
    assert client.post("/api/v1/invitations", {"email": "third@example.com", "role": "viewer"}).status_code == 201
    assert Invitation.objects.for_org(org).filter(revoked_at__isnull=True).count() == 1

    OrgBilling.objects.for_org(org).create(organization=org, plan=Plan.objects.get(slug="pro"), status="active")
    assert client.post("/api/v1/invitations", {"email": "fourth@example.com", "role": "member"}).status_code == 201


def test_an_invitation_accepted_after_the_org_filled_up_is_refused():
    sync_plans(Plan)
    owner = MembershipFactory(role="owner")
    org = owner.organization
    principal = Principal(organization=org, scopes=ROLE_SCOPES[Membership.Role.OWNER], user=owner.user,
                          membership=owner)  # fmt: skip
    issued = invitations.invitation_create(principal=principal, email="late@example.com", role="member")
    MembershipFactory(organization=org)
    MembershipFactory(organization=org)  # the org is full (3) while the invitation is still open
    with pytest.raises(ApplicationError) as refused:
        invitations.invitation_accept(token=issued.token, user=UserFactory(email="late@example.com"))
    assert refused.value.code == "members_limit"
    assert Membership.objects.for_org(org).count() == 3


def test_a_plan_limits_the_chat_models_an_org_may_use(fake, models):
    from saas.llm import gateway
    from saas.llm.providers import ChatRequest

    sync_plans(Plan)
    org = MembershipFactory(role="owner").organization
    free = Plan.objects.get(slug="free")
    free.allowed_models = ["test-small"]
    free.save()
    caller = gateway.Caller(org=org, feature="chat")
    ask = ChatRequest([{"role": "user", "content": "Hello"}])
    assert gateway.chat(caller=caller, model="test-small", request=ask).text
    with pytest.raises(gateway.ModelNotAllowed, match="not included in this org's plan"):
        gateway.chat(caller=caller, model="test-large", request=ask)
    assert gateway.chat(caller=caller, model="auto", request=ask).model == "test-small"  # auto stays in the plan
    OrgBilling.objects.for_org(org).create(organization=org, plan=Plan.objects.get(slug="pro"), status="active")
    assert gateway.chat(caller=caller, model="test-large", request=ask).text


def test_a_plan_with_its_own_rate_limit_replaces_the_servers_org_limit(settings):
    from tests.accounts.conftest import issue_key, key_client

    sync_plans(Plan)
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "org": "4/minute"}
    free_org = MembershipFactory().organization  # Free: the server's limit
    team_org = MembershipFactory().organization
    OrgBilling.objects.for_org(team_org).create(organization=team_org, plan=Plan.objects.get(slug="team"),
                                                status="active")  # fmt: skip
    assert Plan.objects.get(slug="team").api_rate_limit == "10000/minute"
    free, team = key_client(issue_key(free_org).secret), key_client(issue_key(team_org).secret)
    assert [free.get("/api/v1/me").status_code for _ in range(5)] == [200] * 4 + [429]
    assert [team.get("/api/v1/me").status_code for _ in range(5)] == [200] * 5


def test_a_plans_rate_limit_must_be_a_rate_limit():
    from django.core.exceptions import ValidationError

    sync_plans(Plan)
    plan = Plan.objects.get(slug="pro")
    plan.api_rate_limit = "lots"
    with pytest.raises(ValidationError, match="Not a rate limit"):
        plan.full_clean()
