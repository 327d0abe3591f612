import os
import re
from pathlib import Path

import pytest

from tests.billing.conftest import fake_stripe_server, local_stripe  # noqa: F401  (fixtures)

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-quic", "--no-first-run", "--disable-sync",
]  # fmt: skip


# Every page of every browser test reports what the Content-Security-Policy refused (a script, a style, a
# websocket, a form target...), and the test fails on any: the policy and the pages must agree.
CSP_WATCH = """
document.addEventListener("securitypolicyviolation", function (e) {
  console.error("CSP violation: " + e.effectiveDirective + " refused " + (e.blockedURI || "inline code")
    + " in " + e.sourceFile + ":" + e.lineNumber + " (" + document.location.pathname + ")");
});
"""
CSP_VIOLATIONS: list[str] = []


def _refused(text: str) -> bool:
    return text.startswith(("CSP violation", "Refused to")) or "Content Security Policy" in text


def _watch(page) -> None:
    """Chromium's own "Refused to ..." console lines, the watcher's reports, and errors a refusal raised."""

    def on_console(message) -> None:
        if _refused(message.text):
            CSP_VIOLATIONS.append(f"{page.url}: {message.text}")

    def on_error(error) -> None:
        if _refused(str(error)):
            CSP_VIOLATIONS.append(f"{page.url}: {error}")

    page.on("console", on_console)
    page.on("pageerror", on_error)


class WatchedBrowser:
    """The session's browser, whose every context watches its pages for CSP violations."""

    def __init__(self, browser) -> None:
        self._browser = browser

    def new_context(self, **kwargs):
        context = self._browser.new_context(**kwargs)
        context.add_init_script(CSP_WATCH)
        context.on("page", _watch)
        return context

    def new_page(self, **kwargs):
        return self.new_context(**kwargs).new_page()

    def __getattr__(self, name: str):
        return getattr(self._browser, name)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread, which makes Django refuse the test's
    # own (synchronous) database calls; the documented workaround, for the test process only.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    assert Path(CHROMIUM).exists(), f"Debian's chromium is needed at {CHROMIUM} (make test installs it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield WatchedBrowser(browser)
        browser.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture(autouse=True)
def fresh_sign_in_limits():
    """Every browser signs in from 127.0.0.1: allauth's per-address sign-in limit (30 a minute) would refuse the
    later tests of a fast run, so each test starts with the address's count cleared."""
    from saas.core.redis import get_redis

    redis = get_redis()
    for key in redis.scan_iter("*allauth:rl:*"):
        redis.delete(key)


@pytest.fixture(autouse=True)
def no_csp_violations():
    CSP_VIOLATIONS.clear()
    yield
    found, CSP_VIOLATIONS[:] = list(CSP_VIOLATIONS), []
    assert not found, "the Content-Security-Policy refused something:\n" + "\n".join(found)


@pytest.fixture
def screenshot(tmp_path):
    """Save a full-page screenshot; into $SCREENSHOT_DIR when set (to look at them), else a temp dir."""
    target = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> Path:
        path = target / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


PASSWORD = "correct horse battery staple"  # the factories' password


def sign_in(page, base_url: str, email: str) -> None:
    """Sign in through the login form and wait for the org's dashboard."""
    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("form button[type=submit]")
    try:
        page.wait_for_url(re.compile(r"/o/"))
    except Exception as exc:  # say where the sign-in ended instead of only that it timed out
        body = page.inner_text("body")[:1500] if page.url else ""
        raise AssertionError(f"{email} did not reach the dashboard; the page is {page.url}:\n{body}") from exc
