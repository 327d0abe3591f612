"""The plan's storage limit on uploads, and storage in the usage summary."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from billing.catalogue import sync_plans
from billing.models import Plan
from documents.models import Document
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import OrganizationFactory

pytestmark = pytest.mark.django_db


def test_an_upload_past_the_plans_storage_is_refused_and_nothing_is_stored(db):
    sync_plans(Plan)
    Plan.objects.filter(slug="free").update(storage_limit_mb=1)
    org = OrganizationFactory()
    client = key_client(issue_key(org, scopes=["read", "documents:write"]).secret)
    text = ("Refunds take 30 days. " * 30_000).encode()[:600_000]  # 0.6 MB
    first = client.post("/api/v1/documents", {"file": SimpleUploadedFile("a.txt", text)}, format="multipart")
    assert first.status_code == 202
    second = client.post("/api/v1/documents", {"file": SimpleUploadedFile("b.txt", text + b"!")}, format="multipart")
    assert second.status_code == 402
    error = second.json()["error"]
    assert error["code"] == "storage_limit" and "does not fit in the Free plan's storage" in error["message"]
    assert error["details"]["used_bytes"] == 600_000 and error["details"]["allowed_bytes"] == 1024 * 1024
    assert Document.all_orgs.filter(organization=org).count() == 1
    usage = client.get("/api/v1/usage").json()
    assert usage["storage"] == {"used_bytes": 600_000, "limit_bytes": 1024 * 1024}
