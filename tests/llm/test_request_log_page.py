"""The request log page /o/<slug>/requests/: the API's filters and cursor pages, a detail page per call with the
masked prompt and answer for the roles the org's policy allows, and the policy on the settings page."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import AuditEvent, Membership
from saas.core import crypto
from saas.llm.models import LLMCall, OrgLLMSettings
from tests.accounts.factories import MembershipFactory, OrganizationFactory
from tests.agents.factories import RunFactory
from tests.llm.factories import LLMCallFactory

pytestmark = pytest.mark.django_db


def _browser(membership):
    client = Client()
    client.force_login(membership.user)
    return client


def _call(org, minutes_ago=0, **fields):
    call = LLMCallFactory(organization=org, **fields)
    LLMCall.all_orgs.filter(pk=call.pk).update(created_at=timezone.now() - timedelta(minutes=minutes_ago))
    return call


@pytest.fixture
def admin():
    return MembershipFactory(role=Membership.Role.ADMIN)


def test_the_page_filters_and_pages_like_the_api(admin):
    org = admin.organization
    asks = [_call(org, minutes_ago=i, feature="ask", upstream="openai") for i in range(3)]
    chat = _call(org, minutes_ago=10, feature="chat", upstream="anthropic", status="error")
    browser = _browser(admin)
    page = browser.get(f"/o/{org.slug}/requests/", {"feature": "ask", "page_size": 2})
    html = page.content.decode()
    assert page.status_code == 200
    assert f"call-{asks[0].pk}" in html and f"call-{asks[1].pk}" in html and f"call-{asks[2].pk}" not in html
    assert f"call-{chat.pk}" not in html and 'rel="next"' in html
    older = browser.get(page.context["links"]["next"]).content.decode()
    assert f"call-{asks[2].pk}" in older and f"call-{asks[0].pk}" not in older
    by_provider = browser.get(f"/o/{org.slug}/requests/", {"provider": "anthropic", "status": "", "since": ""})
    assert [row["call"].pk for row in by_provider.context["rows"]] == [chat.pk]
    assert f'href="/o/{org.slug}/requests/{chat.pk}/"' in by_provider.content.decode()


def test_bad_filters_say_what_is_wrong(admin):
    page = _browser(admin).get(f"/o/{admin.organization.slug}/requests/", {"since": "last week", "cursor": "x"})
    assert page.status_code == 200 and page.context["errors"]["since"]
    assert b'role="alert"' in page.content and not page.context["rows"]
    bad_cursor = _browser(admin).get(f"/o/{admin.organization.slug}/requests/", {"cursor": "not-a-cursor"})
    assert bad_cursor.status_code == 200 and "cursor" in bad_cursor.context["errors"]


def test_the_detail_page_shows_the_masked_prompt_to_allowed_roles_only(admin):
    org = admin.organization
    run = RunFactory(organization=org)
    call = _call(org, feature="crew", trace_id=str(run.pk),
                 input_encrypted=crypto.encrypt('[{"role": "user", "content": "Mail <EMAIL_1> today"}]'),
                 output_encrypted=crypto.encrypt("Done."), attempts=[{"model": "m", "upstream": "openai",
                                                                       "status": "ok", "latency_ms": 5}])  # fmt: skip
    page = _browser(admin).get(f"/o/{org.slug}/requests/{call.pk}/")
    html = page.content.decode()
    assert page.status_code == 200 and "Mail &lt;EMAIL_1&gt; today" in html and "Done." in html
    assert f'href="/o/{org.slug}/runs/{run.pk}/"' in html
    OrgLLMSettings.objects.for_org(org).create(organization=org, prompt_visibility="owners")
    hidden = _browser(admin).get(f"/o/{org.slug}/requests/{call.pk}/").content.decode()
    assert "EMAIL_1" not in hidden and "Done." not in hidden and "does not let you read" in hidden
    owner = MembershipFactory(organization=org, role=Membership.Role.OWNER)
    assert "Done." in _browser(owner).get(f"/o/{org.slug}/requests/{call.pk}/").content.decode()


def test_another_orgs_call_is_a_404_and_members_are_refused(admin):
    org = admin.organization
    foreign = _call(OrganizationFactory())
    assert _browser(admin).get(f"/o/{org.slug}/requests/{foreign.pk}/").status_code == 404
    member = MembershipFactory(organization=org, role=Membership.Role.MEMBER)
    assert _browser(member).get(f"/o/{org.slug}/requests/").status_code == 403
    assert _browser(member).get(f"/o/{org.slug}/requests/{_call(org).pk}/").status_code == 403


def test_owners_set_the_prompt_visibility_on_the_settings_page(admin):
    org = admin.organization
    owner = MembershipFactory(organization=org, role=Membership.Role.OWNER)
    settings_page = _browser(owner).get(f"/o/{org.slug}/settings/").content.decode()
    assert 'id="request-log-policy"' in settings_page and 'name="prompt_visibility"' in settings_page
    url = f"/o/{org.slug}/settings/prompt-visibility/"
    assert _browser(admin).post(url, {"prompt_visibility": "admins"}).status_code == 403
    assert _browser(owner).post(url, {"prompt_visibility": "owners"}).status_code == 302
    assert OrgLLMSettings.objects.for_org(org).get().prompt_visibility == "owners"
    assert AuditEvent.objects.for_org(org).filter(action="org.prompt_visibility_changed").count() == 1
    _browser(owner).post(url, {"prompt_visibility": "everyone"})
    assert OrgLLMSettings.objects.for_org(org).get().prompt_visibility == "owners"
