"""Collections and documents: upload, ingestion (extract, chunk, embed, store), reindex, delete."""

import hashlib
import logging
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from documents.extraction import ExtractionRefused, chunk_sections, detect_kind, extract_sections
from documents.models import Chunk, Collection, Document
from saas.core import events
from saas.core.errors import ApplicationError, Conflict, NotFound
from saas.llm import crypto, gateway

logger = logging.getLogger(__name__)
DEFAULT_COLLECTION = "Documents"


class DocumentRefused(ApplicationError):
    """An upload we cannot take, with the HTTP status that says why (400, 413, 415)."""

    def __init__(self, refusal: ExtractionRefused) -> None:
        super().__init__(refusal.message, code=refusal.code)
        self.status = refusal.status


# --- Collections -------------------------------------------------------------------------------------------


def collection_default(*, org: Any) -> Collection:
    collections = Collection.objects.for_org(org)
    found = collections.filter(is_default=True).first()
    if found is not None:
        return found
    with transaction.atomic():
        collection, _ = collections.get_or_create(
            organization=org, is_default=True, defaults={"name": DEFAULT_COLLECTION}
        )
    return collection


def collection_get(*, org: Any, collection_id: Any) -> Collection:
    collection = Collection.objects.for_org(org).filter(pk=collection_id).first()
    if collection is None:
        raise NotFound("No such collection.", code="collection_not_found")
    return collection


def collection_create(*, org: Any, name: str, description: str = "") -> Collection:
    name = " ".join(name.split())
    if not name:
        raise ApplicationError("A collection needs a name.", code="invalid")
    collections = Collection.objects.for_org(org)
    if collections.filter(name__iexact=name).exists():
        raise Conflict(f"There is already a collection named {name!r}.", code="duplicate_collection")
    return collections.create(organization=org, name=name[:100], description=description[:500])


def _collection_changed(collection: Collection) -> None:
    """A new knowledge-base version: semantic-cache entries of the old one no longer match."""
    Collection.objects.for_org(collection.organization_id).filter(pk=collection.pk).update(
        version=F("version") + 1, updated_at=timezone.now()
    )


# --- Upload ------------------------------------------------------------------------------------------------


def document_upload(
    *, org: Any, data: bytes, filename: str, collection: Collection | None = None, title: str = "",
    user: Any = None, api_key: Any = None,
) -> Document:  # fmt: skip
    """Checks the bytes (size, type by content, duplicate), stores the file and queues ingestion."""
    if len(data) > settings.DOCUMENTS_MAX_BYTES:
        raise DocumentRefused(_too_large(len(data)))
    try:
        kind = detect_kind(data)
    except ExtractionRefused as refusal:
        raise DocumentRefused(refusal) from refusal
    collection = collection or collection_default(org=org)
    digest = hashlib.sha256(data).hexdigest()
    documents = Document.objects.for_org(org)
    existing = documents.filter(collection=collection, sha256=digest).first()
    if existing is not None:
        raise Conflict(
            f"This file is already in {collection.name!r} as {existing.title!r}.",
            code="duplicate_document",
            details={"document_id": str(existing.pk)},
        )
    name = (filename or "document").replace("\\", "/").rsplit("/", 1)[-1][:255] or "document"
    with transaction.atomic():
        document = Document(
            organization=org, collection=collection, title=(title or name)[:300], filename=name, kind=kind,
            size_bytes=len(data), sha256=digest, uploaded_by=user, api_key=api_key,
        )  # fmt: skip
        document.file.save(name, ContentFile(data), save=False)
        document.save()
        transaction.on_commit(lambda: _enqueue_ingestion(document))
    return document


def _too_large(size: int) -> ExtractionRefused:
    limit = settings.DOCUMENTS_MAX_BYTES
    return ExtractionRefused(
        f"The file is {size / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB.", status=413, code="file_too_large"
    )


def _enqueue_ingestion(document: Document) -> None:
    from documents.tasks import ingest_document

    ingest_document.delay(str(document.organization_id), str(document.pk))


def document_get(*, org: Any, document_id: Any) -> Document:
    document = Document.objects.for_org(org).select_related("collection").filter(pk=document_id).first()
    if document is None:
        raise NotFound("No such document.", code="document_not_found")
    return document


# --- Ingestion ---------------------------------------------------------------------------------------------


def _progress(document: Document, status: str, progress: int, reason: str = "") -> None:
    Document.objects.for_org(document.organization_id).filter(pk=document.pk).update(
        status=status, progress=progress, failure_reason=reason, updated_at=timezone.now()
    )
    document.status, document.progress, document.failure_reason = status, progress, reason
    data = {"id": str(document.pk), "status": status, "progress": progress, "reason": reason}
    try:
        events.push_to_org(document.organization_id, "document.progress", data)
    except Exception:  # a missed progress event must not fail the ingestion
        logger.warning("Could not push progress of document %s", document.pk)


def document_fail(*, document: Document, reason: str) -> None:
    _progress(document, Document.Status.FAILED, document.progress, reason)


def document_ingest(*, org_id: Any, document_id: Any) -> Document | None:
    """Extract, chunk, embed and store. Idempotent: a ready document is left alone, and a re-run replaces the
    chunks of an earlier, interrupted run in one transaction, so there is never a second set."""
    document = Document.objects.for_org(org_id).filter(pk=document_id).select_related("collection").first()
    if document is None or document.status == Document.Status.READY:
        return document
    _progress(document, Document.Status.PROCESSING, 5)
    try:
        with document.file.open("rb") as handle:
            data = handle.read()
        sections, pages = extract_sections(document.kind, data)
        pieces = chunk_sections(sections)
        if not pieces:
            raise ExtractionRefused("There is no text in this document.", code="no_text")
    except ExtractionRefused as refusal:
        document_fail(document=document, reason=refusal.message)
        return document
    _progress(document, Document.Status.PROCESSING, 20)

    caller = gateway.Caller(org=document.organization, feature="ingest", user=document.uploaded_by)
    vectors: list[list[float]] = []
    batch = settings.DOCUMENTS_EMBED_BATCH
    for start in range(0, len(pieces), batch):
        texts = [_embedding_input(piece.heading, piece.text) for piece in pieces[start : start + batch]]
        result = gateway.embed(caller=caller, model=settings.DOCUMENTS_EMBEDDING_MODEL, texts=texts)
        vectors.extend(result.vectors)
        _progress(document, Document.Status.PROCESSING, 20 + int(75 * len(vectors) / len(pieces)))

    full_text = "\n\n".join(section.text for section in sections)
    with transaction.atomic():
        chunks = Chunk.objects.for_org(org_id)
        chunks.filter(document=document).delete()
        chunks.bulk_create(
            Chunk(
                organization_id=document.organization_id, document=document, collection=document.collection,
                position=position, page=piece.page, heading=piece.heading, text_encrypted=crypto.encrypt(piece.text),
                token_count=piece.token_count, embedding=vector, search_vector="",
            )
            for position, (piece, vector) in enumerate(zip(pieces, vectors, strict=True))
        )  # fmt: skip
        _fill_search_vectors(document, pieces)
        Document.objects.for_org(org_id).filter(pk=document.pk).update(
            status=Document.Status.READY, progress=100, failure_reason="", pages=pages, chunk_count=len(pieces),
            text_encrypted=crypto.encrypt(full_text), processed_at=timezone.now(), updated_at=timezone.now(),
        )  # fmt: skip
        _collection_changed(document.collection)
    document.refresh_from_db()
    _progress(document, Document.Status.READY, 100)
    return document


def _embedding_input(heading: str, text: str) -> str:
    # The heading path is part of what a passage is about ("Refunds > Timelines").
    return f"{heading}\n{text}" if heading else text


def _fill_search_vectors(document: Document, pieces: list[Any]) -> None:
    """The full-text vector: heading (weight A) and text (weight B), computed by PostgreSQL in one statement
    from the plain text, which is stored only encrypted."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE documents_chunk AS c
               SET search_vector = setweight(to_tsvector('english', v.heading), 'A')
                                || setweight(to_tsvector('english', v.body), 'B')
              FROM unnest(%s::int[], %s::text[], %s::text[]) AS v(position, heading, body)
             WHERE c.document_id = %s AND c.organization_id = %s AND c.position = v.position
            """,
            [
                list(range(len(pieces))), [p.heading for p in pieces], [p.text for p in pieces],
                document.pk, document.organization_id,
            ],
        )  # fmt: skip


def chunk_text(chunk: Chunk) -> str:
    return crypto.decrypt(chunk.text_encrypted)


def document_text(document: Document) -> str:
    return crypto.decrypt(document.text_encrypted) if document.text_encrypted else ""


# --- Reindex and delete ------------------------------------------------------------------------------------


def document_reindex(*, org: Any, document_id: Any) -> Document:
    document = document_get(org=org, document_id=document_id)
    with transaction.atomic():
        Document.objects.for_org(org).filter(pk=document.pk).update(
            status=Document.Status.QUEUED, progress=0, failure_reason="", updated_at=timezone.now()
        )
        transaction.on_commit(lambda: _enqueue_ingestion(document))
    document.refresh_from_db()
    return document


def document_delete(*, org: Any, document_id: Any) -> None:
    """Removes the document, its chunks and its file; the collection's version moves on, so cached answers
    built on it are no longer served."""
    document = document_get(org=org, document_id=document_id)
    with transaction.atomic():
        Chunk.objects.for_org(org).filter(document=document).delete()
        document.delete()
        _collection_changed(document.collection)
        transaction.on_commit(lambda: document.file.delete(save=False))
