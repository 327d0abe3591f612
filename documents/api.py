"""Documents and collections in the API: upload (multipart), status, list, reindex, delete."""

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.permissions import DOCUMENTS_WRITE, READ
from documents import services
from documents.extraction import ExtractionRefused
from documents.models import Collection, Document
from saas.core.api import OrgScopedViewSet, StrictSerializer
from saas.core.errors import ApplicationError


class CollectionOut(serializers.ModelSerializer):
    class Meta:
        model = Collection
        fields = ["id", "name", "description", "is_default", "version", "created_at"]


class CollectionIn(StrictSerializer):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


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
        "reindex": DOCUMENTS_WRITE,
    }  # fmt: skip

    def safely_get_queryset(self, queryset: Any) -> Any:
        collection = self.request.query_params.get("collection")
        return queryset.filter(collection_id=collection) if collection else queryset

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        # Refuse an oversized upload from its declared length, before anything reads the body.
        if self.action == "create":
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
            if declared > settings.DOCUMENTS_MAX_BYTES + 64 * 1024:  # room for the multipart envelope
                raise services.DocumentRefused(services._too_large(declared))

    @extend_schema(
        request={"multipart/form-data": {"type": "object", "properties": {
            "file": {"type": "string", "format": "binary"}, "collection": {"type": "string", "format": "uuid"},
            "title": {"type": "string"}}, "required": ["file"]}},
        responses={202: DocumentOut},
        summary="Upload a document (PDF, DOCX, Markdown, text, HTML); ingestion runs in the background",
    )  # fmt: skip
    def create(self, request: Request) -> Response:
        upload = request.FILES.get("file")
        if upload is None:
            raise ApplicationError("Send the document as multipart form data in the field `file`.", code="invalid")
        form: Any = request.data
        unknown = sorted(set(form) - {"file", "collection", "title"})
        if unknown:
            raise ApplicationError(
                "Unknown fields.", code="invalid", details={name: ["Unknown field."] for name in unknown}
            )
        org = request.org  # type: ignore[attr-defined]
        collection = None
        if form.get("collection"):
            collection = services.collection_get(org=org, collection_id=_uuid(form["collection"]))
        if upload.size > settings.DOCUMENTS_MAX_BYTES:
            raise services.DocumentRefused(services._too_large(upload.size))
        principal = request.principal  # type: ignore[attr-defined]
        document = services.document_upload(
            org=org, data=upload.read(), filename=upload.name or "", collection=collection,
            title=str(form.get("title") or "")[:300], user=principal.user, api_key=principal.api_key,
        )  # fmt: skip
        return Response(DocumentOut(document).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: DocumentOut})
    @action(detail=True, methods=["post"])
    def reindex(self, request: Request, pk: str) -> Response:
        document = services.document_reindex(org=request.org, document_id=self.get_object().pk)  # type: ignore[attr-defined]
        return Response(DocumentOut(document).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        services.document_delete(org=request.org, document_id=self.get_object().pk)  # type: ignore[attr-defined]
        return Response(status=status.HTTP_204_NO_CONTENT)


def _uuid(value: Any) -> str:
    import uuid

    try:
        return str(uuid.UUID(str(value)))
    except ValueError as exc:
        raise services.DocumentRefused(
            ExtractionRefused("`collection` must be a collection id.", code="invalid")
        ) from exc
