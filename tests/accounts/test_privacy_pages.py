"""The privacy pages and settings: your data (export, delete), the team's privacy settings, the team's export
and deletion, the public privacy page generated from the configuration, expiry and resumption."""

import os
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from django.utils.html import escape

from accounts import erasure, exports
from accounts.models import AuditEvent, DataExport, ErasureRecord, Membership, Organization, User
from saas.core.privacy import stores
from saas.llm import config
from tests.accounts.factories import MembershipFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


def test_the_privacy_page_lists_every_store_and_says_what_this_server_is_configured_to_do(client, settings):
    settings.DATA_EXPORT_KEEP_DAYS = 3
    settings.LLM_CACHE_TTL = 7200
    settings.LLM_UPSTREAMS = {"openai": {"base_url": "https://llm.example.net/v1", "api_key": "sk-x"}}
    page = client.get("/privacy/").content.decode()
    for store in stores():
        assert f'id="store-{store.name}"' in page and escape(store.what) in page
    assert "2 hours from the answer" in page and "for 3 days" in page
    assert "openai (llm.example.net)" in page and "Payments are not switched on" in page
    settings.LLM_UPSTREAMS = {"openai": {"base_url": "", "api_key": ""}}
    assert "No outside AI provider is configured" in client.get("/privacy/").content.decode()


def test_your_data_page_exports_and_downloads(client):
    member: Any = MembershipFactory()
    client.force_login(member.user)
    page = client.get("/account/privacy/").content.decode()
    assert "Export my data" in page and member.organization.name in page and "Deleted with your account" in page
    client.post("/account/privacy/export/")
    export = DataExport.objects.get(user=member.user)
    exports.export_build(export_id=export.pk)
    page = client.get("/account/privacy/").content.decode()
    assert f"/account/exports/{export.pk}/download/" in page
    download = client.get(f"/account/exports/{export.pk}/download/")
    assert download.status_code == 200 and download["Content-Disposition"].startswith("attachment;")
    other = MembershipFactory(organization=member.organization)
    client.force_login(other.user)
    assert client.get(f"/account/exports/{export.pk}/download/").status_code == 404


def test_an_expired_export_loses_its_file_and_says_so(client):
    member = MembershipFactory()
    built = exports.export_build(export_id=exports.export_request(user=member.user).pk)
    assert built is not None
    export, path = built, built.file.path
    DataExport.objects.filter(pk=export.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert exports.exports_expire() == 1
    export.refresh_from_db()
    assert export.status == "expired" and not export.file and not os.path.exists(path)
    client.force_login(member.user)
    response = client.get(f"/api/v1/me/exports/{export.pk}/download")
    assert response.status_code == 410 and response.json()["error"]["code"] == "export_expired"
    assert exports.exports_expire() == 0


def test_deleting_your_account_from_the_page_needs_your_password_and_signs_you_out(client):
    member = MembershipFactory()
    client.force_login(member.user)
    refused = client.post("/account/delete/", {"password": "nope"}, follow=True)
    assert "this one is not it" in refused.content.decode()
    assert User.objects.get(pk=member.user.pk).is_active
    response = client.post("/account/delete/", {"password": PASSWORD}, follow=True)
    assert response.redirect_chain[-1][0] == "/account/deleted/"
    assert "Your account is deleted" in response.content.decode()
    assert client.get("/account/privacy/").status_code == 302  # signed out
    record = ErasureRecord.objects.get(subject_id=str(member.user.pk))
    erasure.erasure_run(record_id=record.pk)
    assert not User.objects.filter(pk=member.user.pk).exists()


def test_admins_set_the_member_content_and_pii_policies_members_cannot(client):
    admin = MembershipFactory(role=Membership.Role.ADMIN)
    org = admin.organization
    member = MembershipFactory(organization=org)
    client.force_login(member.user)
    assert client.post(f"/o/{org.slug}/settings/member-content/", {"member_content": "transfer"}).status_code == 403
    assert client.post(f"/o/{org.slug}/settings/pii/", {"pii_policy": "off"}).status_code == 403
    client.force_login(admin.user)
    page = client.get(f"/o/{org.slug}/settings/").content.decode()
    assert 'id="pii-policy"' in page and 'id="member-content"' in page and 'id="team-delete"' not in page
    refused = client.post(f"/o/{org.slug}/settings/pii/", {"pii_policy": "everything"}, follow=True)
    assert "The policy is one of: off, mask, block." in refused.content.decode()
    client.post(f"/o/{org.slug}/settings/member-content/", {"member_content": "transfer"})
    client.post(f"/o/{org.slug}/settings/pii/", {"pii_policy": "block"})
    assert Organization.objects.get(pk=org.pk).member_content_on_erasure == "transfer"
    assert config.current().policy(org).pii_policy == "block"  # what the gateway applies from now on
    assert set(AuditEvent.objects.for_org(org).values_list("action", flat=True)) >= {
        "org.member_content_policy_changed", "org.pii_policy_changed"}  # fmt: skip


def test_an_owner_exports_and_deletes_the_team_from_its_settings(client):
    owner: Any = MembershipFactory(role=Membership.Role.OWNER)
    org = owner.organization
    client.force_login(owner.user)
    client.post(f"/o/{org.slug}/settings/export/")
    export = DataExport.objects.get(organization=org)
    exports.export_build(export_id=export.pk)
    assert f"/account/exports/{export.pk}/download/" in client.get(f"/o/{org.slug}/settings/").content.decode()
    refused = client.post(f"/o/{org.slug}/settings/delete/", {"confirm": "nope", "password": PASSWORD}, follow=True)
    assert f"Type the team&#x27;s short name, {org.slug}, to confirm." in refused.content.decode()
    response = client.post(f"/o/{org.slug}/settings/delete/", {"confirm": org.slug, "password": PASSWORD},
                           follow=True)  # fmt: skip
    assert "is deleted: its data is being erased" in response.content.decode()
    assert client.get(f"/o/{org.slug}/").status_code == 404
    erasure.erasure_run(record_id=ErasureRecord.objects.get(subject_id=str(org.pk)).pk)
    assert not Organization.objects.filter(pk=org.pk).exists() and not DataExport.objects.filter(pk=export.pk).exists()


def test_an_erasure_whose_job_died_is_started_again(django_capture_on_commit_callbacks):
    member = MembershipFactory()
    record = erasure.account_erase_request(user=member.user, password=PASSWORD)
    assert erasure.erasures_resume() == []  # not stale yet
    ErasureRecord.objects.filter(pk=record.pk).update(updated_at=timezone.now() - timedelta(minutes=11))
    with django_capture_on_commit_callbacks() as callbacks:
        assert erasure.erasures_resume() == [str(record.pk)]
    assert len(callbacks) == 1


def test_password_guesses_before_deleting_are_limited(client, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "auth_ip": "2/minute"}
    member: Any = MembershipFactory()
    client.force_login(member.user)
    for _ in range(2):
        assert client.post("/api/v1/me/delete", {"password": "guess"}).status_code == 403
    refused = client.post("/api/v1/me/delete", {"password": PASSWORD})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert User.objects.get(pk=member.user.pk).is_active


def test_operators_read_erasure_records_in_the_admin_and_cannot_change_them(admin_client):
    member: Any = MembershipFactory()
    record = erasure.account_erase_request(user=member.user, password=PASSWORD)
    erasure.erasure_run(record_id=record.pk)
    listing = admin_client.get("/admin/accounts/erasurerecord/")
    assert listing.status_code == 200 and str(record.subject_id) in listing.content.decode()
    page = admin_client.get(f"/admin/accounts/erasurerecord/{record.pk}/change/").content.decode()
    assert "rate limit counters" in page and 'name="counts"' not in page  # shown, not editable


def test_the_privacy_settings_through_the_api(make_member, session_client):
    admin = make_member(MembershipFactory().organization, role=Membership.Role.ADMIN)
    org = admin.organization
    client = session_client(admin.user)
    assert client.get("/api/v1/org/privacy").json() == {
        "member_content_on_erasure": "delete",
        "retention_days": {"conversations": None, "ledger_content": None, "exports": None}}  # fmt: skip
    refused = client.patch("/api/v1/org/privacy", {"member_content_on_erasure": "transfer",
                                                   "retention_days": {"exports": -1}}, format="json")  # fmt: skip
    assert refused.status_code == 400
    assert Organization.objects.get(pk=org.pk).member_content_on_erasure == "delete"  # nothing half-written
    changed = client.patch("/api/v1/org/privacy", {"member_content_on_erasure": "transfer",
                                                   "retention_days": {"exports": 3}}, format="json").json()  # fmt: skip
    assert changed["member_content_on_erasure"] == "transfer" and changed["retention_days"]["exports"] == 3
    assert client.patch("/api/v1/ai-settings", {"pii_policy": "nope"}, format="json").status_code == 400
    assert client.patch("/api/v1/ai-settings", {"pii_policy": "off"}, format="json").json()["pii_policy"] == "off"
    assert client.get("/api/v1/ai-settings").json()["pii_policy"] == "off"  # more options: tests/llm/test_pii_policy
    viewer = session_client(make_member(org, role=Membership.Role.VIEWER).user)
    assert viewer.patch("/api/v1/ai-settings", {"pii_policy": "mask"}, format="json").status_code == 403
    assert viewer.patch("/api/v1/org/privacy", {"member_content_on_erasure": "delete"},
                        format="json").status_code == 403  # fmt: skip
