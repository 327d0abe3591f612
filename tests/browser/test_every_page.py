"""Acceptance (#16): every page of the workspace, for a member and for an admin, on a laptop (1366x900) and a
phone (390x844), in light and in dark: no sideways scrolling, no console error, no 4xx/5xx response, and axe-core
(pinned, vendored under tests/browser/vendor/ with its licence; only this test loads it) finds no serious or
critical accessibility violation. With $SCREENSHOT_DIR set, a full-page screenshot of each lands there (to look
at them; a run without it, such as CI's, takes none)."""

import os
import time
from pathlib import Path
from typing import Any

import pytest

from saas.llm import prompts
from saas.llm.models import ExperimentVariant, ModelConfig
from saas.llm.registry import sync_registry
from tests.accounts.factories import ApiKeyFactory, InvitationFactory, MembershipFactory
from tests.agents.factories import ConversationFactory, CrewFactory, MessageFactory, RunFactory, RunStepFactory
from tests.analytics.factories import EvalCaseFactory, EvalDatasetFactory, EvalResultFactory, EvalRunFactory
from tests.browser.conftest import sign_in
from tests.browser.test_traces_page import crew_trace
from tests.documents.factories import ChunkFactory, DocumentFactory
from tests.llm.factories import ExperimentFactory

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

AXE = (Path(__file__).parent / "vendor" / "axe-4.10.3.min.js").read_text()
SHOTS = Path(os.environ["SCREENSHOT_DIR"]) if os.environ.get("SCREENSHOT_DIR") else None
SIZES = {"laptop": (1366, 900), "phone": (390, 844)}

OVERFLOW = "() => document.scrollingElement.scrollWidth - window.innerWidth"
RUN_AXE = """async () => {
  const result = await axe.run(document, { resultTypes: ["violations"] });
  return result.violations.filter(v => v.impact === "serious" || v.impact === "critical")
    .map(v => v.id + " (" + v.impact + "): " + v.nodes.slice(0, 3).map(n => n.target.join(" ")).join(", "));
}"""


def _workspace() -> tuple[Any, Any, dict[str, dict[str, str]]]:
    sync_registry(ModelConfig)
    admin: Any = MembershipFactory(role="admin", organization__name="Northwind")
    org = admin.organization
    member: Any = MembershipFactory(role="member", organization=org)
    conversation = ConversationFactory(organization=org, user=member.user, title="Refund policy")
    MessageFactory(organization=org, conversation=conversation)
    crew = CrewFactory(organization=org)
    run = RunFactory(organization=org, crew=crew)
    RunStepFactory(organization=org, run=run)
    document = DocumentFactory(organization=org)
    ChunkFactory(organization=org, document=document)
    ApiKeyFactory(organization=org)
    InvitationFactory(organization=org)
    dataset = EvalDatasetFactory(organization=org, name="Refund questions")
    case = EvalCaseFactory(organization=org, dataset=dataset, expected_answer="30 days", note="Missed the email.")
    runs = [EvalRunFactory(organization=org, dataset=dataset, prompt_version=n, case_count=1, passed_count=n - 1,
                           scores={"groundedness": n - 1.0, "answer": 1.0}) for n in (1, 2)]  # fmt: skip
    for n, eval_run in enumerate(runs):
        EvalResultFactory(organization=org, run=eval_run, case=case, answer="Refunds take 30 days. [1]",
                          scores={"groundedness": float(n), "answer": 1.0}, passed=bool(n),
                          reasons={"groundedness": "All supported.", "answer": "It contains it."})  # fmt: skip
    prompts.prompt_defaults_sync()  # a flushed database has lost the seeded prompts
    experiment = ExperimentFactory(organization=org)
    version = ExperimentVariant.all_orgs.get(experiment=experiment, name="B").version
    trace, _ = crew_trace(org, admin.user)
    o = f"/o/{org.slug}"
    pages = {
        "overview": f"{o}/",
        "documents": f"{o}/documents/",
        "document": f"{o}/documents/{document.id}/",
        "ask": f"{o}/ask/",
        "chats": f"{o}/chat/",
        "crews": f"{o}/crews/",
        "crew": f"{o}/crews/{crew.id}/",
        "crew-builder": f"{o}/crews/new/",
        "run": f"{o}/runs/{run.id}/",
        "members": f"{o}/members/",
        "settings": f"{o}/settings/",
        "your-data": "/account/privacy/",
        "privacy-notice": "/privacy/",
        "two-factor": "/accounts/2fa/",
        "emails": "/accounts/email/",
        "new-team": "/orgs/new/",
        "prompts": f"{o}/prompts/",
        "prompt": f"{o}/prompts/ask.system/",
        "prompt-version": f"{o}/prompts/ask.system/v/{version.id}/",
        "experiments": f"{o}/experiments/",
        "experiment": f"{o}/experiments/{experiment.id}/",
    }
    admin_pages = {
        "api-keys": f"{o}/keys/",
        "audit": f"{o}/audit/",
        "billing": f"{o}/billing/",
        "providers": f"{o}/settings/providers/",
        "request-log": f"{o}/requests/",
        "evals": f"{o}/evals/",
        "eval-dataset": f"{o}/evals/datasets/{dataset.id}/",
        "eval-case": f"{o}/evals/datasets/{dataset.id}/cases/{case.id}/",
        "eval-run": f"{o}/evals/runs/{runs[1].id}/",
        "eval-diff": f"{o}/evals/runs/{runs[1].id}/diff/?against={runs[0].id}",
        "prompt-editor": f"{o}/prompts/ask.system/edit/",
        "experiment-new": f"{o}/experiments/new/",
        "insights": f"{o}/insights/",
        "traces": f"{o}/traces/",
        "trace": f"{o}/traces/{trace.id}/",
    }
    member_pages = {"chat": f"{o}/chat/{conversation.id}/"}  # a conversation is its owner's alone
    return admin, member, {"admin": {**pages, **admin_pages}, "member": {**pages, **member_pages}}


def _settled(page: Any, loading: set[Any], *, quiet: float = 0.15, limit: float = 15.0) -> bool:
    """After the load event, until no request has been in flight for `quiet` seconds (what Playwright's
    "networkidle" does with a fixed 500 ms, which was half of this test's time): what a page fetches once
    loaded (and the errors it may log) is in before it is measured."""
    deadline, quiet_since = time.monotonic() + limit, None
    while time.monotonic() < deadline:
        page.wait_for_timeout(25)  # Playwright delivers the page's events while it waits
        now = time.monotonic()
        if loading:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= quiet:
            return True
    return False


def _walk(browser, base: str, email: str, pages: dict[str, str], who: str, size: str, scheme: str) -> list[str]:
    width, height = SIZES[size]
    context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=scheme)
    page = context.new_page()
    found: list[str] = []
    here = {"name": "sign-in"}

    def console(m: Any) -> None:
        if m.type == "error":
            found.append(f"{here['name']}: console error: {m.text}")

    def response(r: Any) -> None:
        if r.status >= 400:
            found.append(f"{here['name']}: {r.status} {r.url}")

    loading: set[Any] = set()
    page.on("console", console)
    page.on("pageerror", lambda e: found.append(f"{here['name']}: script error: {e}"))
    page.on("response", response)
    page.on("request", lambda r: loading.add(r))
    page.on("requestfinished", lambda r: loading.discard(r))
    page.on("requestfailed", lambda r: loading.discard(r))
    sign_in(page, base, email)
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
    for name, path in pages.items():
        here["name"] = name
        page.goto(base + path)
        if not _settled(page, loading):
            found.append(f"{name}: still loading {sorted(r.url for r in loading)} after 15 s")
        if (overflow := page.evaluate(OVERFLOW)) > 0:
            found.append(f"{name}: the page scrolls sideways by {overflow}px at {width}px")
        page.evaluate(AXE)  # through DevTools, not a <script> tag: the page's CSP stays as it is
        for violation in page.evaluate(RUN_AXE):
            found.append(f"{name}: axe: {violation}")
        if SHOTS is not None:
            page.screenshot(path=str(SHOTS / f"{who}-{size}-{scheme}-{name}.png"), full_page=True)
    context.close()
    return found


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("size", list(SIZES))
def test_every_page_fits_works_and_is_accessible(browser, daphne_server, size, scheme):
    admin, member, pages = _workspace()
    found = []
    for who, person in (("admin", admin), ("member", member)):
        found += _walk(browser, daphne_server.url, person.user.email, pages[who], who, size, scheme)
    assert not found, "\n".join(found)


def test_the_phone_menu_opens_closes_and_marks_the_current_page(browser, daphne_server):
    admin, _, pages = _workspace()
    page = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
    sign_in(page, daphne_server.url, admin.user.email)
    page.goto(daphne_server.url + pages["admin"]["documents"])
    toggle = page.locator("#menu-toggle")
    assert toggle.is_visible() and not page.locator("nav.orgnav").is_visible()
    assert page.evaluate(OVERFLOW) <= 0
    toggle.click()
    assert toggle.get_attribute("aria-expanded") == "true"
    assert page.locator("nav.orgnav >> text=Billing").is_visible()  # every item reachable on a phone
    assert page.locator("nav.orgnav a[aria-current=page]").inner_text() == "Documents"
    page.keyboard.press("Escape")
    assert toggle.get_attribute("aria-expanded") == "false" and not page.locator("nav.orgnav").is_visible()
    # The team switcher closes on Escape and on a click outside.
    page.click("details.switcher summary")
    assert page.locator("details.switcher").get_attribute("open") is not None
    page.keyboard.press("Escape")
    assert page.locator("details.switcher").get_attribute("open") is None
    page.click("details.switcher summary")
    page.click("main h1")
    assert page.locator("details.switcher").get_attribute("open") is None
    # The skip link is the first thing the keyboard reaches on a fresh page.
    page.reload()
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.className") == "skip-link"
