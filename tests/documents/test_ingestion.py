"""Upload through the API, ingest (the service the Celery task calls), and what ends up in the database."""

import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from documents import ingestion, selectors, services
from documents.models import Chunk, Collection, Document
from saas.llm.models import LLMCall, ModelConfig
from saas.llm.registry import sync_registry
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import OrganizationFactory
from tests.documents import files

pytestmark = pytest.mark.django_db


def _upload(client, data: bytes, name: str = "file.bin", **fields):
    return client.post("/api/v1/documents", {"file": SimpleUploadedFile(name, data), **fields}, format="multipart")


def _ingest(org, document_id) -> Document:
    ingestion.document_ingest(org_id=org.pk, document_id=document_id)
    return Document.objects.for_org(org).get(pk=document_id)


def test_upload_returns_202_and_ingestion_makes_chunks_with_pages(org, writer):
    data = files.pdf(["Welcome to the handbook.", files.long_text(2, "Travel. "), "Refunds take 30 days."])
    response = _upload(writer, data, "handbook.pdf")
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued" and body["kind"] == "pdf" and body["title"] == "handbook.pdf"
    default = Collection.objects.for_org(org).get(is_default=True)
    assert body["collection"] == str(default.pk)

    document = _ingest(org, body["id"])
    assert (document.status, document.progress, document.pages) == ("ready", 100, 3)
    chunks = list(Chunk.objects.for_org(org).filter(document=document).order_by("position"))
    assert document.chunk_count == len(chunks) >= 3
    assert {c.page for c in chunks} == {1, 2, 3}
    assert services.chunk_text(chunks[-1]) == "Refunds take 30 days." and chunks[-1].page == 3
    assert all(len(c.embedding) == 384 for c in chunks)
    assert "Refunds" not in chunks[-1].text_encrypted  # stored encrypted
    ingest_calls = LLMCall.all_orgs.filter(organization=org, feature="ingest")
    assert ingest_calls.count() >= 1 and all(c.status == "ok" for c in ingest_calls)
    status = writer.get(f"/api/v1/documents/{document.pk}").json()
    assert status["status"] == "ready" and status["chunk_count"] == len(chunks)
    assert Collection.objects.for_org(org).get(pk=default.pk).version == default.version + 1


def test_chunks_are_embedded_with_the_int8_passage_build_and_found_by_fp32_questions(org, writer):
    """Ingestion embeds with the local model's int8 build (saas/llm/embeddings.py); search embeds the question
    with fp32, and finds the chunk."""
    import numpy as np

    from saas.core.tenancy import org_scope
    from saas.llm import embeddings

    markdown = b"# Refunds\n\nRefunds take 30 days from the purchase."
    document = _ingest(org, _upload(writer, markdown, "refunds.md").json()["id"])
    chunk = Chunk.objects.for_org(org).get(document=document)
    text = ingestion._embedding_input(chunk.heading, services.chunk_text(chunk))
    stored = np.array(chunk.embedding)
    assert np.allclose(stored, embeddings._model(passages=True).encode([text])[0], atol=1e-5)
    assert not np.allclose(stored, embeddings._model().encode([text])[0], atol=1e-5)  # not the fp32 vector
    question = "How long do refunds take?"
    with org_scope(org):
        found = selectors.chunk_search(org=org, query=question, top_k=3)
    assert [hit.chunk_id for hit in found] == [str(chunk.pk)]
    fp32_similarity = float(np.dot(embeddings._model().encode([question])[0], embeddings._model().encode([text])[0]))
    assert abs(found[0].similarity - fp32_similarity) < 0.02  # by meaning, as with fp32 passages


def test_a_word_document_gets_heading_paths(org, writer):
    data = files.word([("h1", "Policies"), ("p", "General rules apply to everyone."), ("h2", "Refunds"),
                       ("p", "Refunds take 30 days from the purchase.")])  # fmt: skip
    document = _ingest(org, _upload(writer, data, "policies.docx").json()["id"])
    headings = list(
        Chunk.objects.for_org(org).filter(document=document).order_by("position").values_list("heading", flat=True)
    )
    assert headings == ["Policies", "Policies > Refunds"]


def test_running_ingestion_again_never_duplicates_chunks(org, writer):
    document_id = _upload(writer, b"# Notes\n\nOne fact. Another fact.", "notes.md").json()["id"]
    _ingest(org, document_id)
    Document.objects.for_org(org).filter(pk=document_id).update(status="processing")  # as if redelivered midway
    _ingest(org, document_id)
    _ingest(org, document_id)  # a ready document is left alone
    assert Chunk.objects.for_org(org).filter(document_id=document_id).count() == 1


def test_the_same_content_twice_in_a_collection_is_a_409(org, writer):
    data = b"# Notes\n\nSame bytes."
    first = _upload(writer, data, "a.md").json()
    second = _upload(writer, data, "b.md")
    assert second.status_code == 409
    assert second.json()["error"]["details"]["document_id"] == first["id"]
    other = writer.post("/api/v1/collections", {"name": "Legal"}, format="json").json()
    assert _upload(writer, data, "b.md", collection=other["id"]).status_code == 202  # another collection may


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"", 400, "empty_file"),
        (b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 64, 415, "unsupported_type"),
        (files.zip_bomb_as_docx(), 413, "archive_too_large"),
    ],
)
def test_bad_uploads_get_a_clear_error_and_leave_nothing(org, writer, data, status, code):
    response = _upload(writer, data)
    assert response.status_code == status and response.json()["error"]["code"] == code
    assert not Document.all_orgs.filter(organization=org).exists()


def test_an_oversized_upload_is_a_413(org, writer, settings):
    settings.DOCUMENTS_MAX_BYTES = 1000
    response = _upload(writer, b"a" * 5000, "big.txt")
    assert response.status_code == 413 and response.json()["error"]["code"] == "file_too_large"


def test_unreadable_pdfs_fail_with_a_reason(org, writer):
    for data, words in ((files.pdf_without_text(), "no text layer"), (files.pdf(["x"], password="pw"), "encrypted")):
        document = _ingest(org, _upload(writer, data, "scan.pdf").json()["id"])
        assert document.status == "failed" and words in document.failure_reason
        assert not Chunk.objects.for_org(org).filter(document=document).exists()


def test_upload_input_errors(org, writer):
    assert writer.post("/api/v1/documents", {}, format="multipart").status_code == 400
    assert _upload(writer, b"# x\n\ny", "x.md", surprise="1").json()["error"]["code"] == "invalid"
    assert _upload(writer, b"# x\n\ny", "x.md", collection="not-a-uuid").status_code == 400
    missing = _upload(writer, b"# x\n\ny", "x.md", collection="00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404


def test_delete_removes_chunks_file_and_moves_the_collection_on(org, writer, django_capture_on_commit_callbacks):
    document = _ingest(org, _upload(writer, b"# Notes\n\nOne fact.", "n.md").json()["id"])
    path = document.file.path
    version = document.collection.version
    with django_capture_on_commit_callbacks(execute=True):
        assert writer.delete(f"/api/v1/documents/{document.pk}").status_code == 204
    assert not Chunk.all_orgs.filter(document_id=document.pk).exists()
    assert not Document.all_orgs.filter(pk=document.pk).exists()
    assert not os.path.exists(path)
    assert Collection.objects.for_org(org).get(pk=document.collection_id).version > version


def test_reading_needs_read_and_writing_needs_documents_write(org):
    reader = key_client(issue_key(org, scopes=["read"]).secret)
    assert reader.get("/api/v1/documents").status_code == 200
    assert _upload(reader, b"# x\n\ny", "x.md").status_code == 403


def test_the_watchdog_requeues_lost_ingestions_and_gives_up_after_its_attempts(
    org, writer, settings, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    settings.DOCUMENTS_MAX_ATTEMPTS = 2
    ids = [_upload(writer, f"# N{i}\n\nFact {i}.".encode(), f"n{i}.md").json()["id"] for i in range(3)]
    long_ago = timezone.now() - timedelta(seconds=settings.DOCUMENTS_STALLED_AFTER + 5)
    documents = Document.objects.for_org(org)
    documents.filter(pk=ids[0]).update(status="processing", attempts=1, updated_at=long_ago)  # lost its worker
    documents.filter(pk=ids[1]).update(status="processing", attempts=2, updated_at=long_ago)  # lost it twice
    documents.filter(pk=ids[2]).update(status="processing", attempts=1)  # working right now
    with django_capture_on_commit_callbacks() as queued:
        assert ingestion.documents_recover_stalled() == {"requeued": 1, "failed": 1}
    assert len(queued) == 1
    assert documents.get(pk=ids[0]).status == "queued"
    gave_up = documents.get(pk=ids[1])
    assert gave_up.status == "failed" and "2 times" in gave_up.failure_reason
    assert documents.get(pk=ids[2]).status == "processing"
    # The re-delivered run finishes the first one.
    assert _ingest(org, ids[0]).status == "ready"


@pytest.mark.django_db(transaction=True)
def test_two_deliveries_ingesting_at_once_leave_one_set_of_chunks(monkeypatch):
    """A redelivered task and the watchdog's can ingest the same document at the same time."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    both_embedded = threading.Barrier(2, timeout=30)
    progress = ingestion._progress

    def in_step(document, status, percent, reason=""):
        progress(document, status, percent, reason)
        if percent == 95:  # both have their vectors: now they store them at the same moment
            both_embedded.wait()

    monkeypatch.setattr(ingestion, "_progress", in_step)

    from django.db import connection

    sync_registry(ModelConfig)  # a flushed test database has lost the seeded registry
    org = OrganizationFactory()
    text = "\n\n".join(f"# Part {i}\n\nFact number {i} about refunds and travel." for i in range(6))
    document = services.document_upload(org=org, data=text.encode(), filename="parts.md")

    def ingest() -> str:
        try:
            return ingestion.document_ingest(org_id=org.pk, document_id=document.pk).status
        finally:
            connection.close()

    with ThreadPoolExecutor(2) as pool:
        statuses = list(pool.map(lambda _: ingest(), range(2)))
    assert statuses == ["ready", "ready"]
    positions = sorted(Chunk.all_orgs.filter(document=document).values_list("position", flat=True))
    assert positions == list(range(6))
