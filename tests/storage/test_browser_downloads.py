"""Downloads from the browser pages: an original, and an export, each decrypted as it streams; a stored file
that is missing is said on the page the member came from (it used to be a 500 for an export)."""

import pytest

from accounts import exports
from documents import services
from tests.accounts.factories import MembershipFactory

pytestmark = pytest.mark.django_db


def test_a_member_downloads_an_original_and_a_missing_one_is_said_on_the_document_page(backend, client):
    member = MembershipFactory(role="member")
    org = member.organization
    document = services.document_upload(org=org, data=b"# Notes\n\nThe fact.", filename="notes.md")
    client.force_login(member.user)
    url = f"/o/{org.slug}/documents/{document.pk}/file/"
    response = client.get(url)
    assert response.status_code == 200 and b"".join(response.streaming_content) == b"# Notes\n\nThe fact."
    assert 'filename="notes.md"' in response["Content-Disposition"]

    stranger = MembershipFactory(role="owner")
    assert client.get(f"/o/{stranger.organization.slug}/documents/{document.pk}/file/").status_code == 404
    assert client.get(f"/o/{org.slug}/documents/00000000-0000-0000-0000-000000000000/file/").status_code == 404

    backend.remove(document.file.name)
    response = client.get(url, follow=True)
    assert response.redirect_chain[-1][0] == f"/o/{org.slug}/documents/{document.pk}/"
    assert "missing from the file storage" in response.content.decode()


def test_an_export_whose_file_is_missing_is_said_on_the_privacy_page(backend, client):
    member = MembershipFactory()
    export = exports.export_build(export_id=exports.export_request(user=member.user).pk)
    assert export is not None
    client.force_login(member.user)
    url = f"/account/exports/{export.pk}/download/"
    ok = client.get(url)
    assert ok.status_code == 200 and b"".join(ok.streaming_content)[:2] == b"PK"  # the zip, decrypted
    backend.remove(export.file.name)
    response = client.get(url, follow=True)
    assert response.status_code == 200 and response.redirect_chain
    assert "missing from the file storage" in response.content.decode()
