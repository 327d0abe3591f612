"""Browser pages: the org's documents (upload, live status), one document (its text and chunks), and ask.
The pages call the same API as developers do (session auth with CSRF), so there is one code path."""

from django.http import HttpResponse
from django.shortcuts import render

from accounts.permissions import ASK, READ
from accounts.views import OrgHttpRequest, org_page
from documents import selectors, services
from documents.models import Chunk


@org_page(READ)
def documents_index(request: OrgHttpRequest) -> HttpResponse:
    services.collection_default(org=request.org)
    collections = selectors.collection_list(org=request.org)
    documents = selectors.document_list(org=request.org)
    can_upload = request.principal.has("documents:write")
    return render(
        request,
        "documents/index.html",
        {"collections": collections, "documents": documents, "can_upload": can_upload},
    )


@org_page(READ)
def document_detail(request: OrgHttpRequest, document_id: str) -> HttpResponse:
    document = services.document_get(org=request.org, document_id=document_id)
    chunks = [
        {"chunk": chunk, "text": services.chunk_text(chunk)}
        for chunk in Chunk.objects.for_org(request.org).filter(document=document).order_by("position")
    ]
    return render(
        request,
        "documents/detail.html",
        {"document": document, "chunks": chunks, "text": services.document_text(document)},
    )


@org_page(ASK)
def ask_page(request: OrgHttpRequest) -> HttpResponse:
    return render(request, "documents/ask.html", {"collections": selectors.collection_list(org=request.org)})
