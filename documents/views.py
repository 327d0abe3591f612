"""Browser pages: the org's documents (upload, live status), one document (its text and chunks), and ask.
The pages call the same API as developers do (session auth with CSRF), so there is one code path."""

from django.http import HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts.permissions import DOCUMENTS_WRITE, READ
from accounts.views import OrgHttpRequest, org_page, run_service
from documents import selectors, services
from documents.models import Chunk, Document
from saas.core import storage
from saas.core.paging import table_page
from saas.core.validators import validate_single_line

DOCUMENTS_PER_PAGE = 25


@org_page(READ)
def documents_index(request: OrgHttpRequest) -> HttpResponse:
    services.collection_default(org=request.org)
    collections = selectors.collection_list(org=request.org)
    shown = next((c for c in collections if str(c.pk) == request.GET.get("collection")), None)
    query, status = request.GET.get("q", "")[:200], request.GET.get("status", "")
    documents = selectors.document_list(org=request.org, collection=shown, query=query, status=status)
    table = table_page(request, documents, per_page=DOCUMENTS_PER_PAGE)
    can_upload = request.principal.has(DOCUMENTS_WRITE)
    return render(request, "documents/index.html", {
        "collections": collections, "documents": table.rows, "table": table, "can_upload": can_upload,
        "shown": shown, "query": query, "status": status, "statuses": Document.Status.choices,
        # a row for a new upload belongs on the first page of an unfiltered list (of its collection)
        "adds_rows": table.page.number == 1 and not query.strip() and not status,
    })  # fmt: skip


@org_page(DOCUMENTS_WRITE)
@require_POST
def collection_new(request: OrgHttpRequest) -> HttpResponse:
    name = request.POST.get("name", "")[:100]

    def create() -> object:
        validate_single_line(name)
        return services.collection_create(org=request.org, name=name)

    run_service(request, create, f"Collection {name!r} created.")
    return redirect("documents-index", org_slug=request.org.slug)


@org_page(DOCUMENTS_WRITE)
@require_POST
def document_reindex(request: OrgHttpRequest, document_id: str) -> HttpResponse:
    run_service(
        request, lambda: services.document_reindex(org=request.org, document_id=document_id), "Processing again."
    )
    return redirect("document-detail", org_slug=request.org.slug, document_id=document_id)


@org_page(DOCUMENTS_WRITE)
@require_POST
def document_delete(request: OrgHttpRequest, document_id: str) -> HttpResponse:
    document = services.document_get(org=request.org, document_id=document_id)
    run_service(
        request,
        lambda: services.document_delete(org=request.org, document_id=document.pk),
        f"Deleted {document.title!r}.",
    )
    return redirect("documents-index", org_slug=request.org.slug)


@org_page(READ)
def document_detail(request: OrgHttpRequest, document_id: str) -> HttpResponse:
    document = services.document_get(org=request.org, document_id=document_id)
    chunks = Chunk.objects.for_org(request.org).filter(document=document).order_by("position")
    return render(request, "documents/detail.html", {
        "document": document, "chunks": [{"chunk": chunk, "text": services.chunk_text(chunk)} for chunk in chunks],
        "text": services.document_text(document),
    })  # fmt: skip


@org_page(READ)  # type: ignore[arg-type]
def document_file(request: OrgHttpRequest, document_id: str) -> HttpResponseBase:
    """The original file, decrypted as it streams; one that cannot be read is said so on the document's page."""
    services.document_get(org=request.org, document_id=document_id)  # not there (or another org's): a 404
    opened = run_service(request, lambda: services.document_original(org=request.org, document_id=document_id))
    if not opened:
        return redirect("document-detail", org_slug=request.org.slug, document_id=document_id)
    document, handle = opened
    return storage.download_response(handle, filename=document.filename, size=document.size_bytes)
