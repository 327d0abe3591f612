"""Documents' share of exports and erasure (saas/core/privacy.py): the rows, their extracted text, their chunks
and vectors, and the original files in storage."""

from typing import Any

from django.db import transaction

from documents.models import Collection, Document
from documents.services import collection_changed, enqueue_index_sync
from saas.core import crypto
from saas.core.privacy import ExportSink, Store, Subject


def _document_json(document: Document) -> dict[str, Any]:
    return {
        "id": str(document.pk),
        "collection": document.collection.name,
        "title": document.title,
        "filename": document.filename,
        "kind": document.kind,
        "size_bytes": document.size_bytes,
        "sha256": document.sha256,
        "status": document.status,
        "pages": document.pages,
        "chunk_count": document.chunk_count,
        "uploaded_at": document.created_at.isoformat(),
        "extracted_text": crypto.decrypt(document.text_encrypted),
    }


def _export(sink: ExportSink, documents: Any, folder: str) -> None:
    rows = []
    for document in documents.select_related("collection").order_by("created_at").iterator(chunk_size=100):
        rows.append(_document_json(document))
        if document.file:
            sink.file(f"{folder}/files/{document.pk}-{document.filename}", document.file.open)
    sink.json(f"{folder}/documents.json", rows)


def export_user(*, sink: ExportSink, user_id: Any, org_id: Any, folder: str) -> None:
    _export(sink, Document.objects.for_org(org_id).filter(uploaded_by_id=user_id), folder)


def export_org(*, sink: ExportSink, org_id: Any, folder: str) -> None:
    collections = Collection.objects.for_org(org_id).order_by("created_at")
    sink.json(f"{folder}/collections.json", [
        {"id": str(c.pk), "name": c.name, "description": c.description, "is_default": c.is_default}
        for c in collections
    ])  # fmt: skip
    _export(sink, Document.objects.for_org(org_id), folder)


def _delete_documents(org_id: Any, documents: Any, batch_size: int) -> int:
    """Files first, then rows (chunks and their vectors go with them): killed in between, a rerun finds the
    rows again and deleting a missing file is a no-op."""
    with transaction.atomic():
        batch = list(documents.select_related("collection").select_for_update(of=("self",))[:batch_size])
        for document in batch:
            if document.file:
                document.file.storage.delete(document.file.name)
        Document.objects.for_org(org_id).filter(pk__in=[d.pk for d in batch]).delete()
        for collection in {d.collection_id: d.collection for d in batch}.values():
            collection_changed(collection)  # cached answers built on them are not served again
        if batch:
            transaction.on_commit(enqueue_index_sync, robust=True)  # their collections' own indexes may have to go
    return len(batch)


def erase_user(*, subject: Subject, batch_size: int) -> int:
    theirs = Document.objects.for_org(subject.org_id).filter(uploaded_by_id=subject.user_id)
    if subject.transfer_content:
        batch = list(theirs.values_list("pk", flat=True)[:batch_size])
        return Document.objects.for_org(subject.org_id).filter(pk__in=batch).update(uploaded_by=None)
    return _delete_documents(subject.org_id, theirs.order_by("created_at"), batch_size)


def erase_org(*, org_id: Any, batch_size: int) -> int:
    deleted = _delete_documents(org_id, Document.objects.for_org(org_id).order_by("created_at"), batch_size)
    if deleted:
        return deleted
    collections = list(Collection.objects.for_org(org_id).values_list("pk", flat=True)[:batch_size])
    with transaction.atomic():
        deleted = Collection.objects.for_org(org_id).filter(pk__in=collections).delete()[0]
        if deleted:
            transaction.on_commit(enqueue_index_sync, robust=True)  # their own HNSW indexes are dropped
    return deleted


STORE = Store(
    name="documents",
    title="Documents",
    what="Uploaded files, their extracted text, the passages cut from them with their embeddings (vectors), "
    "and who uploaded each",
    where="PostgreSQL with pgvector (text encrypted at rest); original files in the file storage",
    kept="Until deleted by the team, or with the account of the member who uploaded them (the team's policy)",
    export_user=export_user,
    export_org=export_org,
    erase_user=erase_user,
    erase_org=erase_org,
)
