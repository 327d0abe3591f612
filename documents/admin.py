from django.contrib import admin

from documents.models import Chunk, Collection, Document
from saas.core.admin import LedgerAdmin, OrgOwnedAdmin, plain_fields


@admin.register(Collection)
class CollectionAdmin(OrgOwnedAdmin):
    list_display = ("name", "organization", "is_default", "version", "created_at")
    list_filter = ("is_default",)
    search_fields = ("name", "organization__name", "organization__slug")
    raw_id_fields = ("organization",)
    readonly_fields = ("version",)
    list_select_related = ("organization",)


@admin.register(Document)
class DocumentAdmin(OrgOwnedAdmin):
    """Documents across teams: their state and size, never their text (it stays encrypted). Ingestion writes
    every field; deleting one here removes its passages too."""

    list_display = ("title", "organization", "collection", "kind", "status", "chunk_count", "size_bytes",
                    "created_at")  # fmt: skip
    list_filter = ("status", "kind")
    search_fields = ("title", "filename", "organization__name", "organization__slug", "sha256")
    date_hierarchy = "created_at"
    list_select_related = ("organization", "collection")
    fields = plain_fields(Document, "file")
    readonly_fields = fields

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False  # documents arrive through the upload, which stores, hashes and ingests them


@admin.register(Chunk)
class ChunkAdmin(LedgerAdmin):
    """The passages retrieval finds (their text encrypted): browsable to see what a document became."""

    list_display = ("document", "organization", "position", "page", "heading", "token_count")
    search_fields = ("document__title", "heading", "organization__name")
    list_select_related = ("document", "organization")
    fields = plain_fields(Chunk)
