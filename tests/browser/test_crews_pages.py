"""Crews in headless Chromium: a ready-made crew in one click, the builder (add, reorder, a refused save shown
by field, a saved change), and a run followed live to its cited output (a real Celery worker runs it)."""

import re
import time
from typing import Any

import pytest

from agents.models import Agent, Crew, Run, RunStep
from documents import services as documents
from documents.models import Document
from saas.llm.models import ModelConfig, OrgLLMSettings
from saas.llm.registry import sync_registry
from tests.accounts.factories import MembershipFactory
from tests.browser.conftest import sign_in

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]
POLICY = "# Refunds\n\nRefunds take 30 days from the purchase date.\n\n# Travel\n\nTrains are booked in second class.\n"


def test_build_a_crew_and_follow_its_run_live(browser, daphne_server, celery_worker_process, screenshot):
    sync_registry(ModelConfig)  # a flushed test database has lost the seeded registry
    member: Any = MembershipFactory(role="member")
    org = member.organization
    OrgLLMSettings(organization=org, default_model="local").save()  # the offline engine
    document = documents.document_upload(org=org, data=POLICY.encode(), filename="policy.md")
    deadline = time.monotonic() + 300  # a bound, not a timing: the worker loads the embedding model first
    while Document.all_orgs.get(pk=document.pk).status != "ready":
        assert time.monotonic() < deadline, "the worker did not ingest the document"
        time.sleep(0.2)

    page = browser.new_context(viewport={"width": 1100, "height": 800}).new_page()
    sign_in(page, daphne_server.url, member.user.email)
    page.click("nav.orgnav >> text=Crews")
    page.wait_for_url(re.compile(r"/crews/$"))
    screenshot(page, "30-crews-empty")

    # One click: the research brief, ready to run.
    page.click("[data-testid=starter-research-brief]")
    page.wait_for_url(re.compile(r"/crews/[0-9a-f-]{36}/$"))
    assert page.locator("h1").inner_text() == "Research brief"
    crew = Crew.all_orgs.get(organization=org)

    # The builder: add a fact-checker, move it up, try to save it without a role, then with one.
    page.click('a.button:text-is("Edit")')
    page.wait_for_selector("#agents fieldset.agent")
    assert page.locator("#agents fieldset.agent").count() == 3
    page.click("#add-agent")
    new_agent = page.locator("#agents fieldset.agent").nth(3)
    new_agent.locator(".goal").fill("Check every claim against the documents.")
    new_agent.locator("input.tool[value=search_documents]").check()
    new_agent.locator("button.up").click()
    page.click("#save-crew")
    page.locator("#builder-errors li").first.wait_for()
    assert "Agent 3, role: This field may not be blank." in page.locator("#builder-errors").inner_text()
    assert page.locator("#agents fieldset.agent").nth(2).locator(".role").get_attribute("class") == "role invalid"
    screenshot(page, "31-builder-refused")
    page.locator("#agents fieldset.agent").nth(2).locator(".role").fill("fact-checker")
    page.click("#save-crew")
    page.wait_for_url(re.compile(rf"/crews/{crew.pk}/$"))
    roles = list(Agent.all_orgs.filter(crew=crew).order_by("position").values_list("role", flat=True))
    assert roles == ["researcher", "writer", "fact-checker", "editor"]
    screenshot(page, "32-crew")

    # Run it and watch the steps arrive.
    page.fill("#input-topic", "how long refunds take")
    page.click("#run-form button[type=submit]")
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}/$"))
    page.locator("#run-status[data-status=succeeded]").wait_for(timeout=90000)
    page.locator("#run-output-box:not([hidden])").wait_for()
    assert "Refunds take 30 days from the purchase date. [1]" in page.locator("#run-output").inner_text()
    run = Run.all_orgs.get(crew=crew)
    assert page.locator("#steps li.step").count() == RunStep.all_orgs.filter(run=run).count()
    assert page.locator("#by-agent tbody tr").count() == 3  # researcher, writer, editor (no fact-checker task)
    screenshot(page, "33-run")

    page.goto(f"{daphne_server.url}/o/{org.slug}/crews/{crew.pk}/")
    assert page.locator("#run-table tbody tr .status[data-status=succeeded]").count() == 1


def _fits(page) -> None:
    """Nothing scrolls sideways: the page is no wider than the window."""
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{page.url} scrolls sideways by {overflow}px"


def test_a_scheduled_crew_with_inputs_run_from_the_list_retried_and_compared(
    browser, daphne_server, celery_worker_process, screenshot
):
    sync_registry(ModelConfig)
    member: Any = MembershipFactory(role="member")
    org = member.organization
    OrgLLMSettings(organization=org, default_model="local").save()  # the offline engine
    document = documents.document_upload(org=org, data=POLICY.encode(), filename="policy.md")
    deadline = time.monotonic() + 300  # a bound, not a timing: the worker loads the embedding model first
    while Document.all_orgs.get(pk=document.pk).status != "ready":
        assert time.monotonic() < deadline, "the worker did not ingest the document"
        time.sleep(0.2)

    page = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()
    sign_in(page, daphne_server.url, member.user.email)
    page.goto(f"{daphne_server.url}/o/{org.slug}/crews/new/")
    page.wait_for_selector("#agents fieldset.agent")
    page.fill("#crew-name", "Refund digest")
    page.locator("#agents fieldset.agent .goal").fill("Find facts in the documents.")
    page.locator("#tasks fieldset.task .description").fill("Find what the documents say about {topic}.")
    assert page.locator("#schedule-inputs").is_hidden()  # no schedule yet: nothing to ask
    page.fill("#crew-cron", "0 8 * * 1")
    page.check("#crew-scheduled")
    page.locator("#schedule-input-topic").wait_for()  # the task's placeholder, asked for the schedule
    page.click("#save-crew")
    page.locator("#builder-errors li").first.wait_for()
    assert "A scheduled run needs this input" in page.locator("#builder-errors").inner_text()
    assert "invalid" in (page.locator("#schedule-input-topic").get_attribute("class") or "")
    screenshot(page, "34-builder-schedule-inputs")
    page.fill("#schedule-input-topic", "refunds")
    page.click("#save-crew")
    page.wait_for_url(re.compile(r"/crews/[0-9a-f-]{36}/$"))
    crew = Crew.all_orgs.get(organization=org, name="Refund digest")
    assert crew.schedule_enabled and crew.schedule_inputs == {"topic": "refunds"} and crew.next_run_at

    # The list's Run button asks for the crew's input and starts it.
    page.goto(f"{daphne_server.url}/o/{org.slug}/crews/")
    page.click(f"[data-testid=run-{crew.pk}]")
    page.fill(f"#run-{crew.pk}-topic", "how long refunds take")
    screenshot(page, "35-crews-run-inputs")
    page.locator(f"tr[data-crew='{crew.pk}'] form button[type=submit]").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}/$"))
    first_url = page.url
    page.locator("#run-status[data-status=succeeded]").wait_for(timeout=90000)
    page.locator("#run-output.md p").first.wait_for(timeout=30000)  # server-rendered Markdown once it ended
    assert "Refunds take 30 days" in page.locator("#run-output").inner_text()
    assert "offline extractive engine" in page.locator("#run-engine").inner_text()
    assert page.locator("#by-agent tbody tr").count() == 1
    assert "ms" in page.locator("#by-agent tbody tr td.bar-cell").first.inner_text()
    screenshot(page, "36-run-rendered")

    # Run it again with the same inputs, then compare the two runs.
    page.click("#retry-run")
    page.wait_for_url(lambda url: url != first_url and "/runs/" in url)
    page.locator("#run-status[data-status=succeeded]").wait_for(timeout=90000)
    assert Run.all_orgs.filter(crew=crew).count() == 2
    assert {tuple(r.inputs.items()) for r in Run.all_orgs.filter(crew=crew)} == {(("topic", "how long refunds take"),)}
    page.locator("#compare-previous").wait_for(timeout=30000)
    page.click("#compare-previous")
    page.wait_for_url(re.compile(r"/runs/compare/\?"))
    assert page.locator(".compare-side.output").count() == 2
    assert all("Refunds take 30 days" in t for t in page.locator(".compare-side.output").all_inner_texts())
    screenshot(page, "37-runs-compared")

    # A phone: the list, the crew, the run and the comparison fit the screen.
    phone = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
    sign_in(phone, daphne_server.url, member.user.email)
    run = Run.all_orgs.filter(crew=crew).order_by("created_at").last()
    compare = page.url.split(f"/o/{org.slug}/")[1]
    shown = [("crews/", "38-crews-390"), (f"crews/{crew.pk}/", "39-crew-390"), (f"runs/{run.pk}/", "40-run-390"),
             (compare, "41-compare-390"), (f"crews/{crew.pk}/edit/", "42-builder-390")]  # fmt: skip
    for path, name in shown:
        phone.goto(f"{daphne_server.url}/o/{org.slug}/{path}")
        _fits(phone)
        screenshot(phone, name)
