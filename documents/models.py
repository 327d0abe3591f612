from typing import ClassVar

from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVectorField
from django.db import models
from pgvector.django import HnswIndex, VectorField

from saas.core.tenancy import OrgOwnedModel

EMBEDDING_DIMENSIONS = 384  # all-MiniLM-L6-v2, the gateway's default embedding model


class Collection(OrgOwnedModel):
    """A knowledge base. Every org has one default collection, where documents go unless told otherwise.
    `version` moves on with every change to its documents: the semantic cache keys answers by it."""

    name = models.CharField(max_length=100)
    description = models.CharField(max_length=500, blank=True)
    is_default = models.BooleanField(default=False)
    version = models.PositiveIntegerField(default=1)

    class Meta(OrgOwnedModel.Meta):
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["organization", "name"], name="documents_collection_name"),
            models.UniqueConstraint(
                fields=["organization"], condition=models.Q(is_default=True), name="documents_one_default"
            ),
        ]

    def __str__(self) -> str:
        return self.name


def _upload_to(document: "Document", filename: str) -> str:
    # Never the user's file name: it is only shown, not trusted.
    return f"orgs/{document.organization_id}/documents/{document.pk}"


class Document(OrgOwnedModel):
    class Kind(models.TextChoices):
        PDF = "pdf", "PDF"
        DOCX = "docx", "Word (DOCX)"
        MARKDOWN = "markdown", "Markdown"
        TEXT = "text", "Plain text"
        HTML = "html", "HTML"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        PROCESSING = "processing", "Processing"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="documents")
    title = models.CharField(max_length=300)
    filename = models.CharField(max_length=255)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    size_bytes = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    file = models.FileField(upload_to=_upload_to, max_length=300)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)  # percent
    failure_reason = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)  # ingestion runs started (a lost worker leaves one)
    pages = models.PositiveIntegerField(null=True, blank=True)
    chunk_count = models.PositiveIntegerField(default=0)
    text_encrypted = models.TextField(blank=True)  # the extracted text (saas.core.crypto)
    uploaded_by = models.ForeignKey("accounts.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    api_key = models.ForeignKey("accounts.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta(OrgOwnedModel.Meta):
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["collection", "sha256"], name="documents_same_content_once"),
        ]
        indexes: ClassVar = [models.Index(fields=["organization", "collection", "-created_at"], name="documents_list")]

    def __str__(self) -> str:
        return self.title


class Chunk(OrgOwnedModel):
    """A passage of a document, with where it came from (page, heading path), its embedding and its
    full-text vector. The text itself is encrypted at rest; the search vector holds lexemes only."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="+")  # for filtering
    position = models.PositiveIntegerField()
    page = models.PositiveIntegerField(null=True, blank=True)
    heading = models.CharField(max_length=500, blank=True)  # "Chapter > Section"
    text_encrypted = models.TextField()
    token_count = models.PositiveIntegerField()
    embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS)
    search_vector = SearchVectorField()

    class Meta(OrgOwnedModel.Meta):
        constraints: ClassVar = [
            # Re-running an ingestion replaces a document's chunks; it can never add a second set.
            models.UniqueConstraint(fields=["document", "position"], name="documents_chunk_position"),
        ]
        indexes: ClassVar = [
            # m 24 / ef_construction 128, not pgvector's 16 / 64: at 1M chunks the smaller graph capped a
            # filtered search's recall@10 near 0.93 whatever ef_search; this one gives 0.99 (bench/retrieval.py).
            HnswIndex(
                name="documents_chunk_embedding",
                fields=["embedding"],
                m=24,
                ef_construction=128,
                opclasses=["vector_cosine_ops"],
            ),
            GinIndex(fields=["search_vector"], name="documents_chunk_fts"),
            models.Index(fields=["organization", "collection"], name="documents_chunk_scope"),
        ]
