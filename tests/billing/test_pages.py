"""The billing page: usage against the allowance for admins, the plans, and an honest word about Stripe."""

import pytest

from billing.catalogue import sync_plans
from billing.models import Plan
from saas.llm import gateway
from saas.llm.providers import ChatRequest
from tests.accounts.factories import MembershipFactory

pytestmark = pytest.mark.django_db


def test_admins_see_usage_against_the_allowance_and_members_do_not(client):
    sync_plans(Plan)
    admin = MembershipFactory(role="admin")
    org = admin.organization
    caller = gateway.Caller(org=org, feature="chat")
    for n in range(3):
        gateway.chat(caller=caller, model="local", request=ChatRequest([{"role": "user", "content": f"Hi {n}"}]))
    client.force_login(admin.user)
    page = client.get(f"/o/{org.slug}/billing/").content.decode()
    assert "<strong>3</strong> of 200 included" in page and "Stripe is not configured" in page
    assert '<span class="badge">current</span>' in page and "$0.00" in page
    member = MembershipFactory(organization=org, role="member")
    client.force_login(member.user)
    assert client.get(f"/o/{org.slug}/billing/").status_code == 403


def test_operators_edit_plans_and_org_billing_in_the_admin(client, django_user_model):
    from billing.models import OrgBilling

    sync_plans(Plan)
    member = MembershipFactory()
    org = member.organization
    OrgBilling.objects.for_org(org).create(organization=org, plan=Plan.objects.get(slug="pro"), status="active")
    operator = django_user_model.objects.create_superuser(email="ops@example.com", password="x" * 20)
    client.force_login(operator)
    assert "Team" in client.get("/admin/billing/plan/").content.decode()
    listing = client.get("/admin/billing/orgbilling/")
    assert listing.status_code == 200 and member.organization.slug in listing.content.decode()


def test_owners_set_the_spend_cap_and_the_quota_follows_it(client):
    from decimal import Decimal

    from accounts.models import AuditEvent
    from billing.models import OrgBilling

    sync_plans(Plan)
    owner = MembershipFactory(role="owner")
    org = owner.organization
    OrgBilling.objects.for_org(org).create(organization=org, plan=Plan.objects.get(slug="pro"), status="active")
    client.force_login(owner.user)
    for bad in ("-5", "ten", "1.234", "1e9", "NaN"):
        page = client.post(f"/o/{org.slug}/billing/spend-cap", {"spend_cap_usd": bad}, follow=True)
        assert "The spend cap is an amount in dollars" in page.content.decode(), bad
    assert OrgBilling.objects.for_org(org).get().spend_cap_usd is None
    client.post(f"/o/{org.slug}/billing/spend-cap", {"spend_cap_usd": "$2.50"})
    assert OrgBilling.objects.for_org(org).get().spend_cap_usd == Decimal("2.50")
    usage = client.get("/api/v1/usage", HTTP_X_CREWDESK_ORG=str(org.pk)).json()
    assert usage["spend_cap_usd"] == "2.50" and usage["ai_requests"]["limit"] == 1000 + 250
    assert AuditEvent.objects.for_org(org).filter(action="billing.spend_cap_set").count() == 1
    client.post(f"/o/{org.slug}/billing/spend-cap", {"spend_cap_usd": ""})
    assert client.get("/api/v1/usage", HTTP_X_CREWDESK_ORG=str(org.pk)).json()["ai_requests"]["limit"] is None

    admin = MembershipFactory(organization=org, role="admin")
    client.force_login(admin.user)
    assert client.post(f"/o/{org.slug}/billing/spend-cap", {"spend_cap_usd": "1"}).status_code == 403
