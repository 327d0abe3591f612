"""API v1 for personal data and the org's privacy (GDPR): export my data or the org's, delete my account or the
org, and the org's retention and erasure policy. Thin: parse, call accounts/exports.py or accounts/erasure.py or
a service, render."""

from typing import Any

from django.db import transaction
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import erasure, exports, services
from accounts.api import OrgRequest, valid_data
from accounts.authentication import request_origin
from accounts.models import DataExport, MemberContent, Organization
from accounts.permissions import ADMIN, OWNER, READ
from saas.core import storage
from saas.core.api import OrgScopedAPIView, StrictSerializer
from saas.core.errors import ApplicationError, NotFound, PermissionDenied


def _origin(request: Request) -> services.Origin:
    return request_origin(request)


class PasswordIn(StrictSerializer):
    password = serializers.CharField(
        max_length=4096, trim_whitespace=False, help_text="Your password again: deleting needs a fresh proof of you."
    )


class OrgDeleteIn(PasswordIn):
    confirm = serializers.CharField(max_length=100, help_text="The org's slug, typed to confirm.")


class DataExportOut(serializers.Serializer):
    id = serializers.UUIDField()
    kind = serializers.CharField()
    org = serializers.CharField(source="organization.slug", allow_null=True, default=None)
    status = serializers.CharField()
    size_bytes = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    download_url = serializers.SerializerMethodField()

    def get_download_url(self, export: DataExport) -> str | None:
        ready = export.status == DataExport.Status.READY
        return f"/api/v1/me/exports/{export.pk}/download" if ready else None


class ErasureOut(serializers.Serializer):
    id = serializers.UUIDField()
    kind = serializers.CharField()
    status = serializers.CharField()


def export_file_response(export: DataExport) -> FileResponse:
    """The zip, as an attachment named after what it holds and when it was made (browser page and API)."""
    subject = export.organization.slug if export.organization else "personal"
    name = f"crewdesk-{subject}-export-{export.created_at:%Y-%m-%d}.zip"
    handle = export.file.storage.open(export.file.name or "", "rb")  # decrypted as it streams (saas/core/storage.py)
    return storage.download_response(handle, filename=name, size=export.size_bytes, content_type="application/zip")


def _person(request: OrgRequest) -> Any:
    """The signed-in person behind a request: personal data is theirs, never an API key's (keys are the org's)."""
    if request.principal.user is None:
        raise PermissionDenied("Personal data is reached signed in as yourself, not with an org's API key.",
                               code="user_required")  # fmt: skip
    return request.principal.user


class MeDeleteView(OrgScopedAPIView):
    required_scopes = {"post": READ}

    @extend_schema(request=PasswordIn, responses={202: ErasureOut}, summary="Delete my account (GDPR Art. 17)")
    def post(self, request: OrgRequest) -> Response:
        data = valid_data(PasswordIn, request)
        record = erasure.account_erase_request(user=_person(request), password=data["password"],
                                               origin=_origin(request))  # fmt: skip
        request.session.flush()
        return Response(ErasureOut(record).data, status=status.HTTP_202_ACCEPTED)


class MeExportView(OrgScopedAPIView):
    """Ask for an export of your personal data (every org of yours): built in the background, announced in the
    app and by email; `GET /api/v1/me/exports` lists yours."""

    required_scopes = {"post": READ}

    @extend_schema(request=None, responses={202: DataExportOut}, summary="Export my data (GDPR Art. 15 and 20)")
    def post(self, request: OrgRequest) -> Response:
        export = exports.export_request(user=_person(request), origin=_origin(request))
        response = Response(DataExportOut(export).data, status=status.HTTP_202_ACCEPTED)
        response["Location"] = f"/api/v1/me/exports/{export.pk}"
        return response


class MeExportsView(OrgScopedAPIView):
    required_scopes = {"get": READ}

    @extend_schema(responses=DataExportOut(many=True))
    def get(self, request: OrgRequest) -> Response:
        return Response(DataExportOut(exports.export_list(user=_person(request)), many=True).data)


class MeExportDetailView(OrgScopedAPIView):
    model = DataExport  # not org-owned: it is the person's; anyone else's is a 404
    required_scopes = {"get": READ}

    @extend_schema(responses=DataExportOut)
    def get(self, request: OrgRequest, pk: str) -> Response:
        if request.principal.user is None:
            raise NotFound("No such export.")
        return Response(DataExportOut(exports.export_get(user=request.principal.user, export_id=pk)).data)


class MeExportDownloadView(OrgScopedAPIView):
    model = DataExport
    required_scopes = {"get": READ}

    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY})
    def get(self, request: OrgRequest, pk: str) -> Any:
        if request.principal.user is None:
            raise NotFound("No such export.")
        export = exports.export_download(user=request.principal.user, export_id=pk, origin=_origin(request))
        return export_file_response(export)


class OrgExportView(OrgScopedAPIView):
    required_scopes = {"post": OWNER}

    @extend_schema(request=None, responses={202: DataExportOut}, summary="Export everything of the org")
    def post(self, request: OrgRequest) -> Response:
        export = exports.organization_export_request(principal=request.principal, origin=_origin(request))
        response = Response(DataExportOut(export).data, status=status.HTTP_202_ACCEPTED)
        response["Location"] = f"/api/v1/me/exports/{export.pk}"
        return response


class OrgDeleteView(OrgScopedAPIView):
    required_scopes = {"post": OWNER}

    @extend_schema(request=OrgDeleteIn, responses={202: ErasureOut}, summary="Delete the org and all its data")
    def post(self, request: OrgRequest) -> Response:
        data = valid_data(OrgDeleteIn, request)
        record = erasure.organization_erase_request(principal=request.principal, confirm=data["confirm"],
                                                    password=data["password"], origin=_origin(request))  # fmt: skip
        return Response(ErasureOut(record).data, status=status.HTTP_202_ACCEPTED)


class RetentionDays(serializers.Serializer):
    conversations = serializers.IntegerField(allow_null=True, source="retain_conversations_days")
    ledger_content = serializers.IntegerField(allow_null=True, source="retain_ledger_content_days")
    exports = serializers.IntegerField(allow_null=True, source="retain_exports_days")


class OrgPrivacyOut(serializers.Serializer):
    member_content_on_erasure = serializers.CharField()
    retention_days = RetentionDays(source="*")


class OrgPrivacyIn(StrictSerializer):
    member_content_on_erasure = serializers.ChoiceField(choices=MemberContent.values, required=False)
    retention_days = serializers.DictField(
        child=serializers.IntegerField(allow_null=True),
        required=False,
        help_text="Any of conversations, ledger_content, exports: days to keep, or null to keep until deleted.",
    )


class OrgPrivacyView(OrgScopedAPIView):
    """What the team keeps and for how long, and what happens to a member's content when they erase their
    account. Admins change it; every change is audited."""

    required_scopes = {"get": READ, "patch": ADMIN}

    @extend_schema(responses=OrgPrivacyOut)
    def get(self, request: OrgRequest) -> Response:
        return Response(OrgPrivacyOut(request.org).data)

    @extend_schema(request=OrgPrivacyIn, responses=OrgPrivacyOut)
    def patch(self, request: OrgRequest) -> Response:
        data = valid_data(OrgPrivacyIn, request)
        with transaction.atomic():  # both changes or neither
            org = self._apply(request, data)
        return Response(OrgPrivacyOut(org).data)

    def _apply(self, request: OrgRequest, data: dict[str, Any]) -> Organization:
        org = request.org
        if "retention_days" in data:
            unknown = set(data["retention_days"]) - set(services.RETENTION_FIELDS)
            if unknown:
                raise ApplicationError(f"Unknown retention: {', '.join(sorted(unknown))}.", code="invalid")
            current = {name: getattr(org, field) for name, field in services.RETENTION_FIELDS.items()}
            days = {name: "" if value is None else str(value)
                    for name, value in {**current, **data["retention_days"]}.items()}  # fmt: skip
            org = services.organization_retention_set(principal=request.principal, days=days, origin=_origin(request))
        if "member_content_on_erasure" in data:
            org = services.organization_member_content_set(principal=request.principal,
                                                           policy=data["member_content_on_erasure"],
                                                           origin=_origin(request))  # fmt: skip
        return org
