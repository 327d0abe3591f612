"""The AI providers page in headless Chromium: a team admin adds the team's own provider pointed at the fake
upstream, tests the connection (which lists its models), enables one, picks it in chat and gets an answer
through the team's key. (Seeing the call in the request log is the request-log slice's part of #15's
acceptance test: extend this test once that page lists calls by provider.)"""

import re

import pytest

from saas.core.redis import get_redis
from saas.llm.models import LLMCall, OrgProvider
from tests.accounts.factories import MembershipFactory
from tests.browser.conftest import sign_in
from tests.conftest import running_daphne
from tests.llm.conftest import FakeControl

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]
TEAM_KEY = "sk-team-browser-key-4321"


@pytest.fixture(scope="module")
def byok_server(django_db_setup, tmp_path_factory, fake_server):
    """Our daphne, allowed to call a team's provider on loopback (where the fake upstream listens)."""
    with running_daphne(tmp_path_factory.mktemp("daphne-byok"), fake_server,
                        LLM_ORG_PROVIDERS_ALLOW_PRIVATE="true") as server:  # fmt: skip
        yield server


def test_an_admin_connects_the_teams_provider_and_chats_with_its_model(browser, byok_server, fake_server, screenshot):
    fake = FakeControl(fake_server)
    fake.reset()
    for key in get_redis().scan_iter("crewdesk:llm:*"):
        get_redis().delete(key)
    admin = MembershipFactory(role="admin")
    org = admin.organization
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    sign_in(page, byok_server.url, admin.user.email)

    page.goto(f"{byok_server.url}/o/{org.slug}/settings/")
    page.click("[data-testid=providers-link]")
    page.wait_for_url(re.compile(r"/settings/providers/$"))
    page.fill("#provider-name", "Team vLLM")
    page.select_option("#provider-kind", "openai_compatible")
    page.fill("#provider-url", fake_server.base_url)
    page.fill("#provider-key", TEAM_KEY)
    page.click("#add-provider button[type=submit]")
    page.wait_for_url(re.compile(r"/settings/providers/[0-9a-f-]+/$"))
    assert page.locator("[data-testid=key-hint]").inner_text() == "…4321"
    assert TEAM_KEY not in page.content()

    page.click("[data-testid=test-connection]")
    page.wait_for_url(re.compile(r"/settings/providers/[0-9a-f-]+/$"))
    assert "Connected: 1 model listed." in page.locator(".messages").inner_text()
    page.check("input[name=model][value=fake-small]")
    page.click("#models button[type=submit]")
    page.wait_for_url(re.compile(r"/settings/providers/[0-9a-f-]+/$"))
    assert "team-vllm/fake-small" in page.locator("#models").inner_text()
    assert OrgProvider.all_orgs.get().enabled_models[0]["id"] == "fake-small"
    screenshot(page, "providers-detail-1366")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, "providers-detail-390")
    page.goto(f"{byok_server.url}/o/{org.slug}/settings/providers/")
    screenshot(page, "providers-list-390")
    page.set_viewport_size({"width": 1366, "height": 900})
    screenshot(page, "providers-list-1366")
    assert TEAM_KEY not in page.content()

    page.click("nav.orgnav >> text=Chat")
    page.click("#start-form button[type=submit]")  # an empty start opens a new conversation
    page.wait_for_url(re.compile(r"/chat/[0-9a-f-]+/$"))
    page.wait_for_function("() => document.querySelector('#live-status') !== null")
    page.select_option("#model", "team-vllm/fake-small")
    page.fill("#question", "echo: answered through the team's own key")
    page.click("#send")
    answer = page.locator(".turn.assistant").first
    answer.locator(".meta").wait_for(timeout=20000)
    assert answer.locator(".text").inner_text() == "answered through the team's own key"
    assert "team-vllm/fake-small" in answer.locator(".meta").inner_text()
    screenshot(page, "providers-chat-1366")
    sent = [r for r in fake.requests() if r["path"] == "/v1/chat/completions"]
    assert sent and sent[-1]["auth"] == f"Bearer {TEAM_KEY}" and sent[-1]["body"]["model"] == "fake-small"
    call = LLMCall.all_orgs.filter(organization=org, feature="chat").latest("created_at")  # not the title's
    assert call.model_used == "team-vllm/fake-small" and call.upstream == "org:team-vllm"

    # The admin finds the call in the team's request log, and opens it: the prompt and answer are there.
    page.goto(f"{byok_server.url}/o/{org.slug}/requests/?provider=org:team-vllm&feature=chat")
    row = page.locator("table.request-log tbody tr").first
    assert "team-vllm/fake-small" in row.locator("td[data-label=Model]").inner_text()
    assert "org:team-vllm" in row.locator("td[data-label=Model]").inner_text()
    row.locator("td[data-label=When] a").click()
    page.wait_for_url(re.compile(rf"/requests/{call.pk}/$"))
    stored = page.locator("pre.stored").all_inner_texts()
    assert any("answered through the team's own key" in text for text in stored)
    screenshot(page, "providers-request-detail-1366")
    context.close()
