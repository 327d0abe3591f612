"""Upload to a ready document through a real Celery worker, with progress pushed to the org's browsers."""

import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from documents.models import Chunk, Document
from saas.llm.models import ModelConfig
from saas.llm.registry import sync_registry
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import OrganizationFactory
from tests.documents import files

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def _wait_for_status(document_id, statuses: set[str], timeout: float = 90.0) -> Document:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        document = Document.all_orgs.get(pk=document_id)
        if document.status in statuses:
            return document
        time.sleep(0.2)
    raise AssertionError(f"document {document_id} stayed {document.status!r} past the deadline")


def test_an_upload_is_ingested_by_the_worker(celery_worker_process):
    sync_registry(ModelConfig)  # a flushed test database has lost the seeded registry
    org = OrganizationFactory()
    client = key_client(issue_key(org, scopes=["read", "documents:write"]).secret)
    data = files.pdf(["Cover.", "Refunds take 30 days from the purchase date."])
    response = client.post("/api/v1/documents", {"file": SimpleUploadedFile("refunds.pdf", data)}, format="multipart")
    assert response.status_code == 202
    document = _wait_for_status(response.json()["id"], {"ready", "failed"})
    assert document.status == "ready", document.failure_reason
    assert document.pages == 2 and Chunk.all_orgs.filter(document=document).count() == document.chunk_count == 2
