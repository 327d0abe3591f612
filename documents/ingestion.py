"""Ingestion, the worker's side of an upload: extract, chunk, embed and store a document's passages, with its
progress pushed to the org's pages, and the watchdog that queues again (or fails) an ingestion whose worker was
lost. Uploads, reindexing and deletion that queue it are in documents/services.py; the Celery task is
documents/tasks.py."""

import logging
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from documents.extraction import ExtractionRefused, chunk_sections, extract_sections
from documents.models import Chunk, Document
from documents.services import collection_changed, enqueue_ingestion
from saas.core import crypto, events, storage
from saas.llm import embeddings, gateway

logger = logging.getLogger(__name__)


def _progress(document: Document, status: str, progress: int, reason: str = "") -> None:
    Document.objects.for_org(document.organization_id).filter(pk=document.pk).update(
        status=status, progress=progress, failure_reason=reason, updated_at=timezone.now()
    )
    document.status, document.progress, document.failure_reason = status, progress, reason
    data = {
        "id": str(document.pk), "status": status, "progress": progress, "reason": reason,
        "chunk_count": document.chunk_count,
    }  # fmt: skip
    try:
        events.push_to_org(document.organization_id, "document.progress", data)
    except Exception:  # a missed progress event must not fail the ingestion
        logger.warning("Could not push progress of document %s", document.pk)


def _gave_up(attempts: int) -> str:
    return f"Processing stopped without finishing {attempts} times (a worker was lost); reindex to try again."


def documents_recover_stalled() -> dict[str, int]:
    """The watchdog: an ingestion whose document has not moved for DOCUMENTS_STALLED_AFTER seconds lost its
    worker. It is queued again, or failed with a reason once it has used its attempts: nothing stays
    queued or processing forever. Cross-org by nature (a beat task)."""
    cutoff = timezone.now() - timedelta(seconds=settings.DOCUMENTS_STALLED_AFTER)
    requeued = failed = 0
    stalled = Document.all_orgs.filter(
        status__in=[Document.Status.QUEUED, Document.Status.PROCESSING], updated_at__lt=cutoff
    )
    for document in stalled.iterator():
        if document.attempts >= settings.DOCUMENTS_MAX_ATTEMPTS:
            document_fail(document=document, reason=_gave_up(document.attempts))
            failed += 1
            continue
        Document.all_orgs.filter(pk=document.pk, updated_at__lt=cutoff).update(
            status=Document.Status.QUEUED, updated_at=timezone.now()
        )
        transaction.on_commit(partial(enqueue_ingestion, document))
        requeued += 1
    if requeued or failed:
        logger.warning("Recovered stalled ingestions: %s queued again, %s failed", requeued, failed)
    return {"requeued": requeued, "failed": failed}


def document_fail(*, document: Document, reason: str) -> None:
    _progress(document, Document.Status.FAILED, document.progress, reason)


def document_ingest(*, org_id: Any, document_id: Any) -> Document | None:
    """Extract, chunk, embed and store. Idempotent: a ready document is left alone, and a re-run replaces the
    chunks of an earlier, interrupted run in one transaction, so there is never a second set."""
    document = Document.objects.for_org(org_id).filter(pk=document_id).select_related("collection").first()
    if document is None or document.status in (Document.Status.READY, Document.Status.FAILED):
        return document
    if document.attempts >= settings.DOCUMENTS_MAX_ATTEMPTS:
        document_fail(document=document, reason=_gave_up(document.attempts))
        return document
    Document.objects.for_org(org_id).filter(pk=document.pk).update(attempts=F("attempts") + 1)
    _progress(document, Document.Status.PROCESSING, 5)
    try:
        data = _original_bytes(document)
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
        with embeddings.for_passages():  # the local model's int8 passage build (saas/llm/embeddings.py)
            result = gateway.embed(caller=caller, model=settings.DOCUMENTS_EMBEDDING_MODEL, texts=texts)
        vectors.extend(result.vectors)
        _progress(document, Document.Status.PROCESSING, 20 + int(75 * len(vectors) / len(pieces)))

    full_text = "\n\n".join(section.text for section in sections)
    with transaction.atomic():
        # Two deliveries of the same ingestion (a redelivered task and the watchdog's) may both get here: the
        # row lock makes the second wait for the first and then find the document ready.
        locked = Document.objects.for_org(org_id).select_for_update().filter(pk=document.pk)
        if locked.values_list("status", flat=True).first() != Document.Status.PROCESSING:
            return Document.objects.for_org(org_id).filter(pk=document.pk).first()
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
        collection_changed(document.collection)
    document.refresh_from_db()
    _progress(document, Document.Status.READY, 100)
    return document


def _original_bytes(document: Document) -> bytes:
    """The uploaded original, decrypted from the file storage. A missing or damaged file fails the document
    with the reason (a retry cannot bring it back); an unreachable store raises, and the task retries."""
    try:
        with document.file.open("rb") as handle:
            return bytes(handle.read())
    except (storage.StoredFileMissing, storage.StoredFileCorrupt) as error:
        raise ExtractionRefused(
            f"The original file cannot be read from the file storage ({error.code}): upload it again.",
            code=error.code,
        ) from error


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
