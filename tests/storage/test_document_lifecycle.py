"""A document's whole life on each backend (local disk, S3): uploaded through the API, ingested by a real worker
process reading the file from the storage, downloaded, exported, erased; at rest never in clear. A damaged or
missing file is a clear error in the one JSON shape, for a download and for an ingestion alike."""

import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from accounts import erasure, exports
from accounts.models import DataExport, ErasureRecord, Organization
from documents import ingestion, services
from documents.models import Document
from saas.llm.models import ModelConfig
from saas.llm.registry import sync_registry
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import MembershipFactory
from tests.conftest import wait_until
from tests.documents import files
from tests.storage.conftest import start_worker

SENTENCE = "Refunds take thirty days from the purchase date."


def _wait_for_status(document_id, statuses: set[str], worker) -> Document:
    def settled() -> bool:
        return Document.all_orgs.get(pk=document_id).status in statuses

    wait_until(settled, timeout=180, what="the ingestion", process=worker)
    return Document.all_orgs.get(pk=document_id)


def _download(client, document_id) -> tuple[int, bytes, dict]:
    response = client.get(f"/api/v1/documents/{document_id}/file")
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response.status_code, body, response


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_upload_ingest_download_export_erase(backend, own_queue, tmp_path, settings):
    sync_registry(ModelConfig)  # a flushed test database has lost the seeded registry
    worker = start_worker(tmp_path, "lifecycle", own_queue, STORAGE_URL=backend.url,
                          TEST_MEDIA_ROOT=settings.MEDIA_ROOT)  # fmt: skip
    try:
        owner = MembershipFactory(role="owner")
        org = owner.organization
        client = key_client(issue_key(org, scopes=["read", "documents:write"]).secret)
        data = files.pdf(["Cover page.", SENTENCE])
        uploaded = client.post("/api/v1/documents", {"file": SimpleUploadedFile("refunds.pdf", data)},
                               format="multipart")  # fmt: skip
        assert uploaded.status_code == 202, uploaded.content
        document = _wait_for_status(uploaded.json()["id"], {"ready", "failed"}, worker)
        assert document.status == "ready", document.failure_reason
        assert SENTENCE in services.document_text(document)  # the worker read the original from the storage

        stored = backend.raw(document.file.name)
        assert data not in stored and b"Refunds take" not in stored and len(stored) > len(data)

        status, body, response = _download(client, document.pk)
        assert status == 200 and body == data
        assert response["Content-Length"] == str(len(data))
        assert 'attachment; filename="refunds.pdf"' in response["Content-Disposition"]
        other = key_client(issue_key(MembershipFactory().organization, scopes=["read"]).secret)
        assert _download(other, document.pk)[0] == 404  # another org's document is not there

        asked = exports.organization_export_request(principal=_owner_principal(owner))  # built by the worker

        def built() -> bool:
            return DataExport.objects.get(pk=asked.pk).status in ("ready", "failed")

        wait_until(built, timeout=120, what="the export", process=worker)
        export = DataExport.objects.get(pk=asked.pk)
        assert export.status == "ready", export.error
        at_rest = backend.raw(export.file.name)
        assert not zipfile.is_zipfile(io.BytesIO(at_rest)) and data not in at_rest
        with export.file.open("rb") as handle, zipfile.ZipFile(io.BytesIO(handle.read())) as archive:
            originals = [n for n in archive.namelist() if n.endswith("-refunds.pdf")]
            assert len(originals) == 1 and archive.read(originals[0]) == data
        assert export.size_bytes == export.file.size

        _erase_org(org)
        assert not backend.exists(document.file.name)
        assert not backend.exists(export.file.name)
        assert not Document.all_orgs.filter(pk=document.pk).exists()
    finally:
        worker.stop()


def _owner_principal(owner):
    from accounts import permissions
    from accounts.permissions import Principal

    return Principal(organization=owner.organization, user=owner.user, membership=owner,
                     scopes=frozenset(permissions.ROLE_SCOPES[owner.role]))  # fmt: skip


def _erase_org(org: Organization) -> None:
    """What deleting the team starts (accounts.erasure.organization_erase_request), run here by hand."""
    Organization.objects.filter(pk=org.pk).update(deletion_requested_at=timezone.now())
    record = ErasureRecord.objects.create(kind=ErasureRecord.Kind.ORGANIZATION, subject_id=str(org.pk),
                                          plan=[{"org": str(org.pk)}])  # fmt: skip
    erasure.erasure_run(record_id=record.pk)
    record.refresh_from_db()
    assert record.status == "done"


@pytest.mark.django_db
def test_a_damaged_or_missing_original_is_a_clear_error_on_download(backend, org, writer):
    document = services.document_upload(org=org, data=b"# Notes\n\n" + SENTENCE.encode(), filename="notes.md")
    status, body, _ = _download(writer, document.pk)
    assert status == 200 and SENTENCE.encode() in body

    stored = bytearray(backend.raw(document.file.name))
    stored[120] ^= 1
    backend.put_raw(document.file.name, bytes(stored))
    status, body, response = _download(writer, document.pk)
    assert status == 409 and response.json()["error"]["code"] == "file_corrupt"
    assert "cannot be read" in response.json()["error"]["message"]

    backend.remove(document.file.name)
    status, body, response = _download(writer, document.pk)
    assert status == 404 and response.json()["error"]["code"] == "file_missing"


@pytest.mark.django_db
def test_an_ingestion_of_a_missing_original_fails_the_document_with_the_reason(backend, org):
    document = services.document_upload(org=org, data=b"# Notes\n\n" + SENTENCE.encode(), filename="notes.md")
    backend.remove(document.file.name)
    result = ingestion.document_ingest(org_id=org.pk, document_id=document.pk)
    assert result is not None and result.status == "failed"
    assert "cannot be read from the file storage (file_missing)" in result.failure_reason


@pytest.mark.django_db
def test_an_export_with_a_missing_original_says_so_instead_of_failing(backend, org):
    owner = MembershipFactory(organization=org, role="owner")
    document = services.document_upload(org=org, data=b"# Notes\n\n" + SENTENCE.encode(), filename="notes.md")
    backend.remove(document.file.name)
    export = exports.export_build(export_id=exports.organization_export_request(principal=_owner_principal(owner)).pk)
    assert export is not None and export.status == DataExport.Status.READY
    with export.file.open("rb") as handle, zipfile.ZipFile(io.BytesIO(handle.read())) as archive:
        notes = [n for n in archive.namelist() if n.endswith("notes.md.unavailable.txt")]
        assert len(notes) == 1 and b"file_missing" in archive.read(notes[0])
