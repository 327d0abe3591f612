"""Ingestion in Celery: thin, idempotent (documents.ingestion.document_ingest), redelivered if the worker dies."""

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from documents import indexing, ingestion
from documents.models import Document
from saas.core.tenancy import org_scope
from saas.llm.providers import LLMError

logger = logging.getLogger(__name__)
MAX_RETRIES = 3


@shared_task(
    name="documents.ingest_document",
    bind=True,
    acks_late=True,  # a worker that dies mid-ingestion leaves the message to be delivered again
    reject_on_worker_lost=True,
    max_retries=MAX_RETRIES,
    soft_time_limit=600,
    time_limit=660,
)
def ingest_document(self, org_id: str, document_id: str) -> str | None:  # type: ignore[no-untyped-def]
    with org_scope(org_id):
        try:
            document = ingestion.document_ingest(org_id=org_id, document_id=document_id)
        except (LLMError, OSError) as exc:  # the embedding model or storage is unavailable for now
            document = Document.objects.for_org(org_id).filter(pk=document_id).first()
            if self.request.retries >= MAX_RETRIES or document is None:
                if document is not None:
                    ingestion.document_fail(document=document, reason=f"Processing failed after retries: {exc}")
                return None
            raise self.retry(exc=exc, countdown=2 ** (self.request.retries + 1)) from exc
        except SoftTimeLimitExceeded:
            document = Document.objects.for_org(org_id).filter(pk=document_id).first()
            if document is not None:
                ingestion.document_fail(document=document, reason="Processing took too long and was stopped.")
            return None
        if document is not None and document.status == Document.Status.READY:
            sync_collection_indexes.delay()  # the collection may have passed the size of its own index
        return document.status if document else None


@shared_task(name="documents.recover_stalled", ignore_result=True)
def recover_stalled() -> dict[str, int]:
    return ingestion.documents_recover_stalled()


@shared_task(
    name="documents.sync_collection_indexes",
    ignore_result=True,
    soft_time_limit=3 * 3600,  # one HNSW build of a large collection (about 30 min for 1M chunks on 2 cores)
    time_limit=3 * 3600 + 60,
)
def sync_collection_indexes() -> dict[str, object]:
    """Builds or drops collections' own HNSW indexes (documents.indexing.collection_indexes_sync), one build per
    run, then queues itself again while builds are pending. A run that finds another one busy does nothing: the
    busy one, or the beat, comes back."""
    result = indexing.collection_indexes_sync(max_builds=1)
    if result.pending:
        sync_collection_indexes.delay()
    return {"built": result.built, "dropped": result.dropped, "pending": result.pending, "busy": result.busy}
