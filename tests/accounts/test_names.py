"""Control characters in names are refused at every door with a 400 / a form error, and nothing is written;
plain-text emails carry names verbatim (issue #14)."""

import pytest
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts.models import ApiKey, Invitation, Organization
from saas.core.validators import validate_single_line
from tests.accounts.conftest import key_client

pytestmark = pytest.mark.django_db

BAD_NAMES = [
    "Acme\r\nBcc: everyone@example.com",
    "Acme\nTeam",
    "Acme\x1b[31mred",
    "invoice\u202efdp.exe",  # a right-to-left override
    "zero\u200bwidth",
    "line\u2028separator",
    "tab\there",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_the_validator_refuses_control_and_format_characters(name):
    with pytest.raises(Exception, match="control characters"):
        validate_single_line(name)


@pytest.mark.parametrize("name", ["O'Brien & Søn <b>", "Zoë's café — 東京 🚀", "Ünïcödé team"])
def test_ordinary_names_pass(name):
    validate_single_line(name)


def _assert_invalid(response, field):
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert "control characters" in str(error["details"]["fields"][field])


@pytest.mark.parametrize("name", BAD_NAMES[:4])
def test_api_refuses_control_characters_in_org_and_key_names(org, admin_key, name):
    client = key_client(admin_key.secret)
    _assert_invalid(client.patch("/api/v1/org", {"name": name}, format="json"), "name")
    org.refresh_from_db()
    assert org.name != name
    keys = ApiKey.objects.for_org(org).count()
    _assert_invalid(client.post("/api/v1/keys", {"name": name, "scopes": ["read"]}, format="json"), "name")
    assert ApiKey.objects.for_org(org).count() == keys


def test_api_refuses_control_characters_in_collection_crew_and_document_names(org, admin_key):
    from documents.models import Collection, Document

    client = key_client(admin_key.secret)
    before = Collection.all_orgs.filter(organization=org).count()
    _assert_invalid(client.post("/api/v1/collections", {"name": "Q3\r\nreports"}, format="json"), "name")
    assert Collection.all_orgs.filter(organization=org).count() == before
    _assert_invalid(client.post("/api/v1/crews", {"name": "Weekly\u202ereport"}, format="json"), "name")
    documents = Document.all_orgs.filter(organization=org).count()
    upload = client.post(
        "/api/v1/documents",
        {"file": SimpleUploadedFile("notes.txt", b"hello"), "title": "notes\nBcc: x"},
        format="multipart",
    )
    _assert_invalid(upload, "title")
    assert Document.all_orgs.filter(organization=org).count() == documents


def test_the_browser_forms_refuse_control_characters(org, make_member, client):
    from documents.models import Collection

    owner = make_member(org, role="owner")
    client.force_login(owner.user)
    orgs = Organization.objects.count()
    page = client.post("/orgs/new/", {"name": "Evil\r\nOrg", "slug": ""})
    assert page.status_code == 200 and "control characters" in page.content.decode()
    assert Organization.objects.count() == orgs
    page = client.post(f"/o/{org.slug}/settings/", {"name": "Evil\r\nOrg"})
    org.refresh_from_db()
    assert "\n" not in org.name
    response = client.post(f"/o/{org.slug}/documents/collections/new/", {"name": "Q3\r\nreports"}, follow=True)
    assert "control characters" in response.content.decode()
    assert not Collection.all_orgs.filter(organization=org, name__startswith="Q3").exists()


def test_an_invitation_that_cannot_be_emailed_writes_nothing(org, admin_key, django_capture_on_commit_callbacks):
    """An org named with a line break before the validator existed: the invitation fails whole (400), no
    orphan row, instead of a 500 after the row was committed."""
    Organization.objects.filter(pk=org.pk).update(name="Legacy\r\nname")
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = key_client(admin_key.secret).post(
            "/api/v1/invitations", {"email": "new@example.com", "role": "member"}, format="json"
        )
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid"
    assert not Invitation.all_orgs.filter(organization=org).exists()
    assert mail.outbox == []


def test_invitation_email_text_is_not_html_escaped(org, admin_key, django_capture_on_commit_callbacks):
    Organization.objects.filter(pk=org.pk).update(name="O'Brien & Sons <b>Team</b>")
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = key_client(admin_key.secret).post(
            "/api/v1/invitations", {"email": "new@example.com", "role": "member"}, format="json"
        )
    assert response.status_code == 201, response.content
    (message,) = mail.outbox
    assert "join O'Brien & Sons <b>Team</b> on Crewdesk" in message.body
    assert "&#x27;" not in message.body and "&lt;" not in message.body and "&amp;" not in message.body
    assert message.subject.endswith("invited you to O'Brien & Sons <b>Team</b> on Crewdesk")
