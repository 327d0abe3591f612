"""The Insights page and GET /api/v1/insights: admins only (a member gets the app's 403, another org's admin a
404), one range grammar with a 400 in the one error shape for a bad one, the same numbers on both, and the
failing questions only for whom the org's prompt policy allows."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Membership
from analytics import rollups
from saas.core import crypto
from saas.llm.models import LLMCall, OrgLLMSettings
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import MembershipFactory, OrganizationFactory
from tests.agents.factories import FeedbackFactory
from tests.llm.factories import LLMCallFactory

pytestmark = pytest.mark.django_db


def question(text: str) -> str:
    return crypto.encrypt(f'[{{"role": "system", "content": "Sources"}}, {{"role": "user", "content": "{text}"}}]')


@pytest.fixture
def team():
    admin = MembershipFactory(role=Membership.Role.ADMIN)
    org = admin.organization
    now = timezone.now()
    for _ in range(3):
        LLMCallFactory(organization=org, feature="ask", model_used="small", latency_ms=400, ttft_ms=90,
                       prompt_tokens=50, completion_tokens=10, cost_usd=Decimal("0.001"), groundedness=1.0,
                       input_encrypted=question("Where do I park?"))  # fmt: skip
        LLMCallFactory(organization=org, feature="ask", model_used="small", status="error", error_class="timeout",
                       latency_ms=30000, input_encrypted=question("What is the refund window?"))  # fmt: skip
    bad = LLMCallFactory(organization=org, feature="chat", model_used="large", groundedness=0.25, latency_ms=800,
                         input_encrypted=question("What is the refund window?"))  # fmt: skip
    FeedbackFactory(organization=org, llm_call=bad, message=None, rating=-1)
    LLMCall.all_orgs.filter(organization=org).update(created_at=now - timedelta(minutes=100))
    rollups.rollup_hours(org_ids=[org.pk])
    client = APIClient()
    client.force_login(admin.user)
    return org, admin, client


def test_the_page_draws_every_chart_with_the_teams_numbers(team):
    org, _, client = team
    response = client.get(f"/o/{org.slug}/insights/?range=24h")
    assert response.status_code == 200
    page = response.content.decode()
    for chart in ("chart-requests", "chart-errors", "chart-latency", "chart-tokens", "chart-cost", "chart-cache",
                  "chart-groundedness"):  # fmt: skip
        assert f'data-chart="{chart}" data-has-data="true"' in page or chart == "chart-cache", chart
    assert "Requests per hour: 7 in all" in page
    assert "Timeout" in page and "Thumbs-down share" in page
    assert "What is the refund window?" in page  # top failing question: 3 errors, a thumbs-down, ungrounded
    assert page.index("What is the refund window?") < page.index("</table>", page.index("failing-questions"))
    assert 'aria-current="page">Dashboards' in page.replace("\n", "")
    assert f'href="/o/{org.slug}/insights/"' in page  # the nav item


def test_api_gives_the_same_numbers_as_the_page(team):
    org, _, client = team
    body = client.get("/api/v1/insights?range=24h").json()
    totals = body["totals"]
    assert totals["requests"] == 7 and totals["errors"] == 3 and totals["error_rate"] == round(3 / 7, 4)
    assert totals["feedback_down"] == 1 and totals["thumbs_down_share"] == 1.0
    assert Decimal(totals["cost_usd"]) == Decimal("0.003")
    assert body["errors_by_kind"] == [{"kind": "timeout", "count": 3}]
    assert body["failing_questions"][0]["question"] == "What is the refund window?"
    assert body["failing_questions"][0]["failures"] == 5  # 3 errors + the thumbs-down + poorly grounded
    assert len(body["series"]) == 24 and sum(item["requests"] for item in body["series"]) == 7
    page = client.get(f"/o/{org.slug}/insights/?range=24h").content.decode()
    assert f"{100 * 3 / 7:.1f}%" in page  # the error rate tile


def test_an_admin_key_reads_it_and_a_read_key_or_a_member_may_not(team):
    org, _, _ = team
    assert key_client(issue_key(org, scopes=["read", "admin"]).secret).get("/api/v1/insights").status_code == 200
    refused = key_client(issue_key(org, scopes=["read"]).secret).get("/api/v1/insights")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "missing_scope"
    member = MembershipFactory(organization=org, role=Membership.Role.MEMBER)
    client = APIClient()
    client.force_login(member.user)
    assert client.get(f"/o/{org.slug}/insights/").status_code == 403
    assert client.get("/api/v1/insights").status_code == 403
    assert "Insights" not in client.get(f"/o/{org.slug}/").content.decode().split("</nav>")[0]


def test_another_orgs_admin_gets_a_404_and_never_its_numbers(team):
    org, _, _ = team
    stranger = MembershipFactory(role=Membership.Role.OWNER)
    client = APIClient()
    client.force_login(stranger.user)
    assert client.get(f"/o/{org.slug}/insights/").status_code == 404
    body = client.get("/api/v1/insights?range=24h").json()  # their own org: empty
    assert body["totals"]["requests"] == 0 and body["failing_questions"] == []
    other_key = key_client(issue_key(OrganizationFactory(), scopes=["read", "admin"]).secret)
    assert other_key.get("/api/v1/insights?range=24h").json()["totals"]["requests"] == 0


@pytest.mark.parametrize("query", ["range=1y", "start=2026-13-01&end=2026-12-02", "start=2026-11-01",
                                   "start=2026-11-10&end=2026-11-01", "start=2026-01-01&end=2026-12-01",
                                   "start=20261101&end=20261102", "start=2026-11-01T00:00&end=2026-11-02"])  # fmt: skip
def test_a_bad_range_is_a_400_in_the_one_error_shape_and_a_page_that_says_why(team, query):
    org, _, client = team
    response = client.get(f"/api/v1/insights?{query}")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and error["message"] and error["details"]["fields"]
    page = client.get(f"/o/{org.slug}/insights/?{query}")
    assert page.status_code == 400
    assert error["message"] in page.content.decode().replace("&#x27;", "'")


def test_a_custom_range_of_days_is_read_by_day(team):
    _, _, client = team
    today = timezone.now().date()
    body = client.get(f"/api/v1/insights?start={today - timedelta(days=9)}&end={today}").json()
    assert body["range"] == "custom" and body["step"] == "day" and len(body["series"]) == 10
    assert body["totals"]["requests"] == 7


def test_failing_questions_follow_the_orgs_prompt_policy(team):
    org, _, client = team
    OrgLLMSettings.all_orgs.update_or_create(organization=org, defaults={"prompt_visibility": "owners"})
    assert client.get("/api/v1/insights?range=24h").json()["failing_questions"] is None
    page = client.get(f"/o/{org.slug}/insights/?range=24h").content.decode()
    assert "What is the refund window?" not in page and 'id="failing-hidden"' in page
