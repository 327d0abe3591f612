"""Your data in headless Chromium, with a real worker: ask for an export, download it when the worker has built
it, then delete the account and watch the worker erase it. Also the team's privacy settings and /privacy/."""

import io
import json
import re
import time
import zipfile
from typing import Any

import pytest

from accounts.models import ErasureRecord, Membership, User
from tests.accounts.factories import MembershipFactory
from tests.browser.conftest import PASSWORD, sign_in

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def _until(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {timeout}s")


def test_a_member_exports_their_data_then_deletes_their_account(browser, daphne_server, celery_worker_process,
                                                                  screenshot):  # fmt: skip
    member: Any = MembershipFactory(role=Membership.Role.MEMBER, organization__name="Northwind")
    MembershipFactory(organization=member.organization, role=Membership.Role.OWNER)
    page = browser.new_context(viewport={"width": 1100, "height": 900}, accept_downloads=True).new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the destructive forms ask first (page.js)
    sign_in(page, daphne_server.url, member.user.email)
    page.click("nav.account >> text=Your data")
    page.click("text=Export my data")
    assert "Your export is being prepared" in page.locator(".messages").inner_text()

    def ready() -> bool:
        page.reload()
        return page.locator("[data-testid=exports] >> text=Download").count() == 1

    _until(ready, "the worker building the export")
    screenshot(page, "50-your-data")
    with page.expect_download() as download:
        page.click("[data-testid=exports] >> text=Download")
    data = download.value.path().read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert json.loads(archive.read("profile.json"))["email"] == member.user.email
    assert "Deleted with your account" in page.locator("[data-testid=erasure-preview]").inner_text()

    page.fill("#delete-password", "not my password")
    page.click("text=Delete my account and my data")
    assert "this one is not it" in page.locator(".messages").inner_text()
    page.fill("#delete-password", PASSWORD)
    page.click("text=Delete my account and my data")
    page.wait_for_url("**/account/deleted/")
    screenshot(page, "51-account-deleted")
    _until(lambda: not User.objects.filter(pk=member.user.pk).exists(), "the worker erasing the account")
    assert ErasureRecord.objects.get(subject_id=str(member.user.pk)).status == "done"


def test_an_owner_sets_the_teams_privacy_reads_the_privacy_page_and_deletes_the_team(
    browser, daphne_server, screenshot
):
    owner: Any = MembershipFactory(role=Membership.Role.OWNER, organization__name="Northwind")
    page = browser.new_context(viewport={"width": 1100, "height": 1000}).new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the destructive forms ask first (page.js)
    sign_in(page, daphne_server.url, owner.user.email)
    page.goto(f"{daphne_server.url}/o/{owner.organization.slug}/settings/")
    page.select_option("#member-content-select", "transfer")
    page.click("#member-content >> text=Save")
    assert page.locator("#member-content-select").input_value() == "transfer"
    page.select_option("#pii-policy-select", "block")
    page.click("#pii-policy >> text=Save")
    assert page.locator("#pii-policy-select").input_value() == "block"
    assert page.locator("#team-delete").is_visible() and page.locator("#team-export").is_visible()
    screenshot(page, "52-team-privacy-settings")
    page.goto(f"{daphne_server.url}/privacy/")
    assert page.locator("[data-testid=stores] tbody tr").count() >= 6
    screenshot(page, "53-privacy-page")

    # The owner deletes the team while a member has one of its pages open: the member's tab leaves it.
    org = owner.organization
    member: Any = MembershipFactory(organization=org, role=Membership.Role.MEMBER)
    other = browser.new_context(viewport={"width": 1100, "height": 800}).new_page()
    sign_in(other, daphne_server.url, member.user.email)
    other.goto(f"{daphne_server.url}/o/{org.slug}/documents/")
    other.wait_for_selector("#live-status[data-state=open]")
    page.goto(f"{daphne_server.url}/o/{org.slug}/settings/")
    page.fill("#delete-confirm", org.slug)
    page.fill("#delete-team-password", PASSWORD)
    page.click("text=Delete Northwind and all its data")
    assert "Northwind is deleted" in page.locator(".messages").inner_text()
    other.wait_for_url(re.compile(r"/orgs/new/$"), timeout=15000)  # home, and no team left: make one
    assert other.goto(f"{daphne_server.url}/o/{org.slug}/documents/").status == 404
    # The erasure runs on in the worker: the test ends when it is done (not while its deletes still hold locks
    # the next test's database reset needs).
    _until(
        lambda: ErasureRecord.objects.filter(subject_id=str(org.pk), status=ErasureRecord.Status.DONE).exists(),
        "the team's erasure finished",
        timeout=300,
    )
