"""`/api/v1/providers`: an org's own providers (bring your own key), for its admins. Keys go in, never out:
responses show `key_hint` (the last four characters) and the names of extra headers, never their values."""

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.authentication import request_origin
from accounts.permissions import ADMIN
from saas.core.api import OrgScopedAPIView, StrictSerializer
from saas.llm import org_providers
from saas.llm.models import OrgProvider


class ProviderIn(StrictSerializer):
    name = serializers.CharField(max_length=200, required=False)
    kind = serializers.CharField(max_length=32, required=False)
    base_url = serializers.CharField(max_length=600, required=False, allow_blank=True)
    api_key = serializers.CharField(max_length=4000, required=False, allow_blank=True, write_only=True)
    headers = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False, allow_null=True)
    api_version = serializers.CharField(max_length=32, required=False, allow_blank=True)
    timeout_seconds = serializers.FloatField(required=False, allow_null=True)
    enabled = serializers.BooleanField(required=False)
    models = serializers.ListField(child=serializers.JSONField(), required=False, max_length=200)


def _validated(request: Request) -> dict[str, Any]:
    serializer = ProviderIn(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _out(row: OrgProvider) -> dict[str, Any]:
    return org_providers.org_provider_view(row).as_json()


class ProviderListView(OrgScopedAPIView):
    required_scopes = {"get": ADMIN, "post": ADMIN}

    @extend_schema(responses=OpenApiTypes.OBJECT, summary="The org's own providers (admins)",
                   operation_id="api_v1_providers_list")  # fmt: skip
    def get(self, request: Request) -> Response:
        rows = org_providers.org_provider_list(org=request.org)  # type: ignore[attr-defined]
        return Response({"results": [_out(row) for row in rows]})

    @extend_schema(request=ProviderIn, responses=OpenApiTypes.OBJECT, summary="Add a provider (bring your own key)")
    def post(self, request: Request) -> Response:
        data = _validated(request)
        models = data.pop("models", None)
        principal, origin = request.principal, request_origin(request)  # type: ignore[attr-defined]
        row = org_providers.org_provider_create(principal=principal, data=data, origin=origin)
        if models is not None:
            row = org_providers.org_provider_set_models(principal=principal, provider_id=row.pk, models=models,
                                                        origin=origin)  # fmt: skip
        return Response(_out(row), status=201)


class ProviderDetailView(OrgScopedAPIView):
    model = OrgProvider
    required_scopes = {"get": ADMIN, "patch": ADMIN, "delete": ADMIN}

    @extend_schema(responses=OpenApiTypes.OBJECT, summary="One of the org's providers")
    def get(self, request: Request, provider_id: str) -> Response:
        return Response(_out(org_providers.org_provider_get(org=request.org, provider_id=provider_id)))  # type: ignore[attr-defined]

    @extend_schema(request=ProviderIn, responses=OpenApiTypes.OBJECT, summary="Change a provider (a key is kept "
                   "unless a new one is given); `models` sets the models the org uses")  # fmt: skip
    def patch(self, request: Request, provider_id: str) -> Response:
        org_providers.org_provider_get(org=request.org, provider_id=provider_id)  # type: ignore[attr-defined]
        data = _validated(request)
        if "kind" in data:
            raise serializers.ValidationError({"kind": ["A provider's kind cannot change: add another provider."]})
        models = data.pop("models", None)
        principal, origin = request.principal, request_origin(request)  # type: ignore[attr-defined]
        row = org_providers.org_provider_update(principal=principal, provider_id=provider_id, data=data, origin=origin)
        if models is not None:
            row = org_providers.org_provider_set_models(principal=principal, provider_id=row.pk, models=models,
                                                        origin=origin)  # fmt: skip
        return Response(_out(row))

    @extend_schema(responses={204: None}, summary="Delete a provider and its key")
    def delete(self, request: Request, provider_id: str) -> Response:
        org_providers.org_provider_delete(principal=request.principal, provider_id=provider_id,  # type: ignore[attr-defined]
                                          origin=request_origin(request))  # fmt: skip
        return Response(status=204)


class ProviderTestView(OrgScopedAPIView):
    model = OrgProvider
    required_scopes = {"post": ADMIN}

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT, summary="Test the connection: the upstream's models")
    def post(self, request: Request, provider_id: str) -> Response:
        found = org_providers.org_provider_test(principal=request.principal, provider_id=provider_id)  # type: ignore[attr-defined]
        return Response({"ok": True, "models": [{"id": m.id, "kind": m.kind} for m in found]})
