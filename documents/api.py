"""Documents and collections in the API: upload (multipart), status, list, reindex, delete."""

import itertools
from collections.abc import Generator, Iterator
from typing import Any

from django.conf import settings
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.authentication import ApiKeyAuthentication, CsrfSessionAuthentication
from accounts.permissions import ASK, DOCUMENTS_WRITE, READ
from documents import selectors, services
from documents.models import Collection, Document
from saas.core import storage
from saas.core.api import OrgScopedAPIView, OrgScopedViewSet, StrictSerializer
from saas.core.schema import PLAN_LIMIT
from saas.core.streaming import sse, sse_response
from saas.core.validators import validate_single_line
from saas.llm import gateway
from saas.llm.providers import LLMError


class CollectionOut(serializers.ModelSerializer):
    class Meta:
        model = Collection
        fields = ["id", "name", "description", "is_default", "version", "created_at"]


class CollectionIn(StrictSerializer):
    name = serializers.CharField(max_length=100, validators=[validate_single_line])
    description = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class UploadIn(StrictSerializer):
    # Size (413) and type (by content, 415) are checked by documents.services.document_upload.
    file = serializers.FileField(allow_empty_file=True, max_length=255)
    collection = serializers.UUIDField(required=False)
    title = serializers.CharField(
        required=False, allow_blank=True, max_length=300, default="", validators=[validate_single_line]
    )


class DocumentOut(serializers.ModelSerializer):
    class Meta:
        model = Document
        fields = [
            "id", "collection", "title", "filename", "kind", "size_bytes", "sha256", "status", "progress",
            "failure_reason", "pages", "chunk_count", "created_at", "processed_at",
        ]  # fmt: skip


class CollectionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):
    model = Collection
    serializer_class = CollectionOut
    ordering = "name"
    required_scopes = {"list": READ, "retrieve": READ, "create": DOCUMENTS_WRITE}

    @extend_schema(request=CollectionIn, responses={201: CollectionOut})
    def create(self, request: Request) -> Response:
        data = CollectionIn(data=request.data)
        data.is_valid(raise_exception=True)
        collection = services.collection_create(org=request.org, **data.validated_data)  # type: ignore[attr-defined]
        return Response(CollectionOut(collection).data, status=status.HTTP_201_CREATED)


class DocumentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):
    model = Document
    serializer_class = DocumentOut
    ordering = "-created_at"
    parser_classes = [MultiPartParser, JSONParser]
    required_scopes = {
        "list": READ, "retrieve": READ, "create": DOCUMENTS_WRITE, "destroy": DOCUMENTS_WRITE,
        "reindex": DOCUMENTS_WRITE, "file": READ,
    }  # fmt: skip
    rate_limit_endpoints = {"create": "upload"}

    def safely_get_queryset(self, queryset: Any) -> Any:
        collection = self.request.query_params.get("collection")
        return queryset.filter(collection_id=collection) if collection else queryset

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        # Refuse an oversized upload from its declared length, before anything reads the body.
        if self.action == "create":
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
            if declared > settings.DOCUMENTS_MAX_BYTES + 64 * 1024:  # room for the multipart envelope
                raise services.DocumentRefused(services.too_large(declared))

    @extend_schema(
        request={"multipart/form-data": {"type": "object", "properties": {
            "file": {"type": "string", "format": "binary"}, "collection": {"type": "string", "format": "uuid"},
            "title": {"type": "string"}}, "required": ["file"]}},
        responses={202: DocumentOut, 402: PLAN_LIMIT},
        summary="Upload a document (PDF, DOCX, Markdown, text, HTML); ingestion runs in the background",
    )  # fmt: skip
    def create(self, request: Request) -> Response:
        serializer = UploadIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        upload = data["file"]
        org = request.org  # type: ignore[attr-defined]
        collection = (
            services.collection_get(org=org, collection_id=data["collection"]) if "collection" in data else None
        )
        principal = request.principal  # type: ignore[attr-defined]
        document = services.document_upload(
            org=org, data=upload.read(), filename=upload.name or "", collection=collection, title=data["title"],
            user=principal.user, api_key=principal.api_key,
        )  # fmt: skip
        return Response(DocumentOut(document).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: DocumentOut})
    @action(detail=True, methods=["post"])
    def reindex(self, request: Request, pk: str) -> Response:
        document = services.document_reindex(org=request.org, document_id=self.get_object().pk)  # type: ignore[attr-defined]
        return Response(DocumentOut(document).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        responses={(200, "*/*"): OpenApiTypes.BINARY},  # the original's own type (application/pdf, text/markdown...)
        summary="Download the original file (decrypted from the file storage)",
    )
    @action(detail=True, methods=["get"], url_path="file")
    def file(self, request: Request, pk: str) -> FileResponse:
        document, handle = services.document_original(org=request.org, document_id=self.get_object().pk)  # type: ignore[attr-defined]
        return storage.download_response(handle, filename=document.filename, size=document.size_bytes)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        services.document_delete(org=request.org, document_id=self.get_object().pk)  # type: ignore[attr-defined]
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Search and ask ----------------------------------------------------------------------------------------


class SearchIn(StrictSerializer):
    query = serializers.CharField(max_length=services.MAX_QUESTION_CHARS)
    collection = serializers.UUIDField(required=False)
    top_k = serializers.IntegerField(required=False, min_value=1, max_value=50)


class AskIn(StrictSerializer):
    question = serializers.CharField(max_length=services.MAX_QUESTION_CHARS)
    collection = serializers.UUIDField(required=False)
    top_k = serializers.IntegerField(required=False, min_value=1, max_value=20)
    model = serializers.CharField(required=False, max_length=64, default="default")
    stream = serializers.BooleanField(default=False)


def _collection(request: Request, data: dict[str, Any]) -> Collection | None:
    if "collection" not in data:
        return None
    return services.collection_get(org=request.org, collection_id=data["collection"])  # type: ignore[attr-defined]


class SearchView(OrgScopedAPIView):
    authentication_classes = [ApiKeyAuthentication, CsrfSessionAuthentication]
    required_scopes = {"post": READ}

    @extend_schema(request=SearchIn, responses=OpenApiTypes.OBJECT, summary="Hybrid search over the org's documents")
    def post(self, request: Request) -> Response:
        serializer = SearchIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        hits = selectors.chunk_search(
            org=request.org, query=data["query"], collection=_collection(request, data),  # type: ignore[attr-defined]
            top_k=data.get("top_k"), caller=gateway.Caller.of(request.principal, "ask"),  # type: ignore[attr-defined]
        )  # fmt: skip
        return Response({"results": [hit.as_json() for hit in hits]})


class AskView(OrgScopedAPIView):
    authentication_classes = [ApiKeyAuthentication, CsrfSessionAuthentication]
    required_scopes = {"post": ASK}
    rate_limit_endpoints = {"post": "ask"}

    @extend_schema(request=AskIn, responses=OpenApiTypes.OBJECT, summary="Answer from the documents, with citations")
    def post(self, request: Request) -> Any:
        serializer = AskIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        caller = gateway.Caller.of(request.principal, "ask")  # type: ignore[attr-defined]
        collection = _collection(request, data)
        if not data["stream"]:
            answer = services.ask(
                caller=caller, question=data["question"], collection=collection, top_k=data.get("top_k"),
                model=data["model"],
            )  # fmt: skip
            return Response(answer.as_json())
        events = services.ask_stream(
            caller=caller, question=data["question"], collection=collection, top_k=data.get("top_k"),
            model=data["model"],
        )  # fmt: skip
        first = next(events)  # bad input and failures before the first token still get a proper HTTP status
        return sse_response(_sse_events(first, events))


def _sse_events(first: dict[str, Any], events: Generator[dict[str, Any], None, None]) -> Iterator[bytes]:
    try:
        for event in itertools.chain([first], events):
            yield sse(event)
    except LLMError as error:
        yield sse({"type": "error", "error": {"code": error.kind, "message": error.message}})
    finally:
        events.close()  # a client that went away cancels the model call
