"""The prompt editor and an experiment in headless Chromium: an admin writes a new version of the Ask rules,
sees the diff against the default before saving, labels it staging, starts an A/B test of it against the
default, reads the experiment's figures (first "not enough data yet", then, with rated answers, each variant's
thumbs up, groundedness, time and cost and the significance) and ends it, confirming, with the new version as
the winner: it is in production. Screenshots at 1366 and
390 px wide; no page scrolls sideways."""

from decimal import Decimal
from typing import Any

import pytest

from agents.models import Feedback
from saas.llm import prompts
from saas.llm.models import Experiment, ExperimentVariant, LLMCall, ModelConfig, Prompt
from saas.llm.registry import sync_registry
from tests.accounts.factories import MembershipFactory, UserFactory
from tests.browser.conftest import sign_in

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

NO_SIDEWAYS = "() => document.documentElement.scrollWidth <= window.innerWidth"
NEW_RULES = (
    "Answer the question using only the numbered sources below.\n"
    "After each sentence, cite the sources it comes from with their numbers in brackets, like [2].\n"
    "Keep the answer to three sentences or fewer.\n"
    "If the sources do not contain the answer, say that you could not find it in the documents."
)


def _rated(experiment: Experiment, name: str, ups: int, downs: int, latency: int, cost: str) -> None:
    variant = ExperimentVariant.all_orgs.get(experiment=experiment, name=name)
    org = experiment.organization
    for n, rating in enumerate([1] * ups + [-1] * downs):
        call = LLMCall.all_orgs.create(organization=org, feature="ask", model_requested="local", model_used="local",
                                       latency_ms=latency + n % 40, cost_usd=Decimal(cost), groundedness=0.9,
                                       experiment_variant=variant, prompt_version=variant.version)  # fmt: skip
        Feedback.all_orgs.create(organization=org, llm_call=call, user=UserFactory(), rating=rating)


def _both_widths(page, shoot, name: str) -> None:
    shoot(page, f"{name}-1366")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate(NO_SIDEWAYS), f"{name} scrolls sideways at 390 px"
    shoot(page, f"{name}-390")
    page.set_viewport_size({"width": 1366, "height": 900})


def test_an_admin_edits_a_prompt_with_its_diff_and_runs_an_experiment(browser, daphne_server, screenshot):
    sync_registry(ModelConfig)  # a flushed test database has lost the seeded registry
    prompts.prompt_defaults_sync()
    admin: Any = MembershipFactory(role="admin", organization__name="Northwind")
    org = admin.organization
    page = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # data-confirm asks first
    sign_in(page, daphne_server.url, admin.user.email)

    page.goto(f"{daphne_server.url}/o/{org.slug}/prompts/")
    assert page.locator("text=ask.system").first.is_visible()
    _both_widths(page, screenshot, "80-prompts")
    page.click("text=Ask: answer from documents")
    assert "default version 1" in page.locator("[data-testid=in-production]").inner_text()
    page.click("[data-testid=edit-prompt]")

    # The editor: the new text, previewed as a diff against the default, then saved.
    page.fill("#prompt-text", NEW_RULES)
    page.fill("#prompt-note", "Shorter answers, no outside-knowledge line")
    page.click("[data-testid=preview-diff]")
    added = page.locator(".diff-added .diff-text").all_inner_texts()
    removed = page.locator(".diff-removed .diff-text").all_inner_texts()
    assert "Keep the answer to three sentences or fewer." in added
    assert any("Do not use outside knowledge." in line for line in removed)
    assert page.input_value("#prompt-text") == NEW_RULES  # the preview keeps what was typed
    _both_widths(page, screenshot, "81-prompt-editor-diff")
    page.click("[data-testid=save-version]")
    page.wait_for_url("**/prompts/ask.system/v/**")
    assert "Saved as a new version" in page.inner_text("body")
    assert page.locator(".diff-added").count() >= 1

    # Staging: under test, not yet in use.
    page.click("[data-testid=label-staging-1]")
    page.wait_for_selector("[data-testid=label]:has-text('staging')")
    version = Prompt.all_orgs.get(organization=org, key="ask.system").staging
    assert version is not None and version.text == NEW_RULES
    assert Prompt.all_orgs.get(organization=org, key="ask.system").production_id is None
    _both_widths(page, screenshot, "82-prompt-version")

    # An experiment: the default (in production: the control, A) against the new version (B).
    page.goto(f"{daphne_server.url}/o/{org.slug}/experiments/")
    page.click("[data-testid=new-experiment]")
    page.select_option("#exp-key", "ask.system")
    page.click("text=Show its versions")
    page.fill("#exp-name", "Three sentences")
    page.check("text=Default version 1")
    page.check("text=Your version 1")
    page.fill("#exp-min", "40")
    page.click("[data-testid=start-experiment]")
    page.wait_for_url("**/experiments/*/")
    assert page.locator("[data-testid=not-enough-data]").is_visible()
    experiment = Experiment.all_orgs.get(organization=org)
    _both_widths(page, screenshot, "83-experiment-new")

    _rated(experiment, "A", ups=28, downs=22, latency=420, cost="0.0021")
    _rated(experiment, "B", ups=41, downs=9, latency=310, cost="0.0014")
    page.reload()
    assert page.locator("[data-testid=not-enough-data]").count() == 0
    assert "Variant B beats the control" in page.locator("[data-testid=verdict]").inner_text()
    assert page.locator("[data-testid=p-value-B]").inner_text().startswith("p = 0.00")
    assert "82.0%" in page.locator("[data-testid=variant-B]").inner_text()
    _both_widths(page, screenshot, "84-experiment-stats")

    # Ending with the winner (confirmed first) puts B's version in production.
    assert page.locator("#winner option:checked").inner_text().startswith("B: your v1")
    page.click("[data-testid=end-experiment]")
    page.wait_for_selector("text=winner: variant B")
    assert Prompt.all_orgs.get(organization=org, key="ask.system").production == version
    page.goto(f"{daphne_server.url}/o/{org.slug}/prompts/ask.system/")
    assert "your version 1" in page.locator("[data-testid=in-production]").inner_text()
    _both_widths(page, screenshot, "85-prompt-after-experiment")
