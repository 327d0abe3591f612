"""In headless Chromium against a real daphne: sign up, invite a member, accept the invitation as that
member, create an API key and use it against /api/v1/me."""

import json
import re
import time
import urllib.request

import pytest

from accounts.audit import action_label

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-long-and-unguessable-passphrase"


def _sign_up(page, server, email, next_path=""):
    page.goto(f"{server.url}/accounts/signup/{next_path}")
    page.fill("input[name=email]", email)
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("form button[type=submit]")


def _confirm_address(page, server, email, timeout=10.0):
    """Sign-up ends on "check your email" (it never says whether the address had an account); the link in the
    email confirms the address and signs the new account in, on to where it was going."""
    page.wait_for_url(re.compile(r"/accounts/confirm-email/$"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in server.sent_mail():
            if f"To: {email}" in message and "/accounts/confirm-email/" in message:
                page.goto(re.search(r"(http://\S+/accounts/confirm-email/\S+/)", message).group(1))
                page.click("form button[type=submit]")
                return
        time.sleep(0.2)
    raise AssertionError(f"no confirmation email to {email}")


def _invitation_link(server, email, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in server.sent_mail():
            if f"To: {email}" in message and "/invitations/" in message:
                return re.search(r"(http://\S+/invitations/[\w-]+/)", message).group(1)
        time.sleep(0.2)
    raise AssertionError(f"no invitation email to {email}")


def test_sign_up_invite_accept_create_key_and_call_the_api(browser, daphne_server, screenshot):
    server = daphne_server
    admin = browser.new_context(viewport={"width": 1280, "height": 900})
    page = admin.new_page()

    _sign_up(page, server, "founder@example.com")
    _confirm_address(page, server, "founder@example.com")
    page.wait_for_url(re.compile(r"/o/[\w-]+/$"))
    org_slug = page.url.rstrip("/").split("/")[-1]
    assert "founder's team" in page.inner_text("header")
    screenshot(page, "01-dashboard")

    page.click("nav.orgnav >> text=Members")
    page.fill("input[name=email]", "teammate@example.com")
    page.select_option("select[name=role]", "member")
    page.click("text=Send invitation")
    assert "Invitation sent to teammate@example.com" in page.inner_text(".messages")
    assert "teammate@example.com" in page.inner_text("main")
    screenshot(page, "02-members")

    # The teammate, in a browser of their own, follows the link from the email.
    link = _invitation_link(server, "teammate@example.com")
    teammate = browser.new_context(viewport={"width": 390, "height": 844})  # a phone
    mate = teammate.new_page()
    mate.goto(link)
    assert "Join founder's team" in mate.inner_text("h1")
    screenshot(mate, "03-invitation-phone")
    mate.click("text=Create an account")
    mate.fill("input[name=email]", "teammate@example.com")
    mate.fill("input[name=password1]", PASSWORD)
    mate.fill("input[name=password2]", PASSWORD)
    mate.click("form button[type=submit]")
    _confirm_address(mate, server, "teammate@example.com")
    mate.wait_for_url(re.compile(r"/invitations/"))
    mate.click("text=Accept invitation")
    mate.wait_for_url(f"{server.url}/o/{org_slug}/")
    assert "Welcome to founder's team" in mate.inner_text(".messages")
    mate.click("#menu-toggle")  # on a phone the navigation opens from the Menu button
    mate.click("nav.orgnav >> text=Members")
    assert "teammate@example.com" in mate.inner_text("table")
    assert "Members" in (mate.text_content("nav.orgnav") or "")
    assert "API keys" not in (mate.text_content("nav.orgnav") or "")  # a member does not manage keys
    screenshot(mate, "04-members-as-member-phone")

    # Back to the founder: the teammate is a member now; create a key.
    page.reload()
    row = page.locator("tr[data-member='teammate@example.com']")
    assert row.locator("select").input_value() == "member"
    page.click("nav.orgnav >> text=API keys")
    page.fill("input[name=name]", "integration test")
    page.check("input[name=scopes][value=read]")
    page.click("text=Create key")
    key = page.inner_text("[data-testid=new-key]").strip()
    assert key.startswith("cdk_live_")
    api = page.inner_text("[data-testid=api-url]").strip()  # where the page says the API is
    assert api == f"{server.url}/api/v1/"
    screenshot(page, "05-key-created")
    page.reload()  # re-posts the form: must neither create a second key nor show the secret again
    assert key not in page.content()
    assert "already created" in page.inner_text(".messages")
    assert page.locator("tbody tr").count() == 1

    request = urllib.request.Request(f"{api}me", headers={"Authorization": f"Bearer {key}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        me = json.load(response)
    assert me["org"]["slug"] == org_slug
    assert me["key"]["name"] == "integration test"
    assert me["scopes"] == ["read"]

    page.goto(f"{server.url}/o/{org_slug}/keys/")
    assert "never" not in page.inner_text("table")  # last use recorded and shown
    page.click("nav.orgnav >> text=Audit log")
    log = page.inner_text("table")
    for action in ("org.created", "invitation.created", "invitation.accepted", "api_key.created"):
        assert action_label(action) in log  # in words: "Team created", "Invitation sent", ...
    screenshot(page, "06-audit-log")

    page.click("nav.orgnav >> text=Settings")
    page.fill("#retain-conversations", "30")
    page.click("#retention button[type=submit]")
    page.locator(".messages li", has_text="Retention saved.").wait_for(timeout=10000)
    assert page.input_value("#retain-conversations") == "30" and page.input_value("#retain-ledger") == ""
    screenshot(page, "07-settings-retention")
    admin.close()
    teammate.close()
