"""API v1 for the org itself: who am I, members, invitations, API keys, the audit log. Thin: parse, call a
service or selector, render. Exports, erasure and the org's privacy settings are accounts/privacy_api.py."""

from datetime import timedelta
from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import invitations, key_guard, selectors, services
from accounts.authentication import request_origin
from accounts.models import ApiKey, AuditEvent, Invitation, Membership, Organization
from accounts.permissions import ADMIN, OWNER, READ, Principal
from saas.core.api import OrgScopedAPIView, OrgScopedViewSet, StrictSerializer
from saas.core.schema import PLAN_LIMIT
from saas.core.validators import validate_single_line


class OrgRequest(Request):
    """What OrgScopedAPIView guarantees to its handlers."""

    org: Organization
    principal: Principal


def _origin(request: Request) -> services.Origin:
    return request_origin(request)


# --- Output ------------------------------------------------------------------------------------------------


class OrganizationOut(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    slug = serializers.CharField()


class MemberOut(serializers.Serializer):
    id = serializers.UUIDField()
    email = serializers.EmailField(source="user.email")
    role = serializers.CharField()
    joined_at = serializers.DateTimeField(source="created_at")


class InvitationOut(serializers.Serializer):
    id = serializers.UUIDField()
    email = serializers.EmailField()
    role = serializers.CharField()
    status = serializers.CharField()
    invited_by = serializers.EmailField(source="invited_by.email", allow_null=True, default=None)
    expires_at = serializers.DateTimeField()
    created_at = serializers.DateTimeField()


class ApiKeyOut(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    prefix = serializers.CharField()
    scopes = serializers.ListField(child=serializers.CharField())
    status = serializers.CharField()
    expires_at = serializers.DateTimeField(allow_null=True)
    last_used_at = serializers.DateTimeField(allow_null=True)
    last_used_ip = serializers.IPAddressField(allow_null=True)
    created_at = serializers.DateTimeField()
    replaced_by = serializers.UUIDField(source="replaced_by_id", allow_null=True)
    allowed_networks = serializers.ListField(
        child=serializers.CharField(), help_text="Networks (CIDR) the key may be used from; empty: anywhere."
    )


class IssuedKeyOut(ApiKeyOut):
    key = serializers.CharField(help_text="The full key. Shown in this response only: store it now.")


class AuditEventOut(serializers.Serializer):
    id = serializers.UUIDField()
    created_at = serializers.DateTimeField()
    action = serializers.CharField()
    actor = serializers.CharField(source="actor_label")
    actor_type = serializers.SerializerMethodField()
    target_type = serializers.CharField()
    target_id = serializers.CharField()
    target = serializers.CharField(source="target_label")
    ip = serializers.IPAddressField(allow_null=True)
    user_agent = serializers.CharField()
    request_id = serializers.CharField()
    metadata = serializers.JSONField()

    def get_actor_type(self, event: AuditEvent) -> str:
        return "api_key" if event.actor_api_key_id else ("user" if event.actor_user_id else "system")


def _issued_key(issued: services.IssuedKey) -> dict[str, Any]:
    return {**ApiKeyOut(issued.api_key).data, "key": issued.secret}


# --- Input -------------------------------------------------------------------------------------------------


class OrgUpdateIn(StrictSerializer):
    name = serializers.CharField(max_length=120, validators=[validate_single_line])


class TransferIn(StrictSerializer):
    member_id = serializers.UUIDField()


class RoleIn(StrictSerializer):
    role = serializers.ChoiceField(choices=Membership.Role.choices)


class InvitationIn(StrictSerializer):
    email = serializers.EmailField(max_length=254)
    role = serializers.ChoiceField(choices=Membership.Role.choices, default=Membership.Role.MEMBER)


class ApiKeyIn(StrictSerializer):
    name = serializers.CharField(max_length=100, validators=[validate_single_line])
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=ApiKey.Scope.choices), allow_empty=False, max_length=10
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class NetworksIn(StrictSerializer):
    allowed_networks = serializers.ListField(
        child=serializers.CharField(max_length=64), max_length=key_guard.MAX_NETWORKS, allow_empty=True
    )


class RotateIn(StrictSerializer):
    grace_hours = serializers.IntegerField(min_value=0, max_value=168, default=24)


def valid_data(serializer_class: type[serializers.Serializer], request: OrgRequest) -> dict[str, Any]:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


# --- Views -------------------------------------------------------------------------------------------------


class MeView(OrgScopedAPIView):
    required_scopes = {"get": READ}

    @extend_schema(
        responses=inline_serializer(
            "Me",
            {
                "org": OrganizationOut(),
                "key": inline_serializer(
                    "MeKey", {"name": serializers.CharField(), "prefix": serializers.CharField()}, allow_null=True
                ),
                "user": inline_serializer("MeUser", {"email": serializers.EmailField()}, allow_null=True),
                "role": serializers.CharField(allow_null=True, help_text="The member's role; null for an API key."),
                "scopes": serializers.ListField(child=serializers.CharField()),
            },
        )
    )
    def get(self, request: OrgRequest) -> Response:
        principal = request.principal
        key = principal.api_key
        return Response(
            {
                "org": OrganizationOut(principal.organization).data,
                "key": {"name": key.name, "prefix": key.prefix} if key else None,
                "user": {"email": principal.user.email} if principal.user else None,
                "role": principal.role,
                "scopes": sorted(principal.scopes),
            }
        )


class OrgView(OrgScopedAPIView):
    required_scopes = {"get": READ, "patch": ADMIN}

    @extend_schema(responses=OrganizationOut)
    def get(self, request: OrgRequest) -> Response:
        return Response(OrganizationOut(request.org).data)

    @extend_schema(request=OrgUpdateIn, responses=OrganizationOut)
    def patch(self, request: OrgRequest) -> Response:
        data = valid_data(OrgUpdateIn, request)
        org = services.organization_update(principal=request.principal, name=data["name"], origin=_origin(request))
        return Response(OrganizationOut(org).data)


class TransferOwnershipView(OrgScopedAPIView):
    required_scopes = {"post": OWNER}

    @extend_schema(request=TransferIn, responses=MemberOut)
    def post(self, request: OrgRequest) -> Response:
        data = valid_data(TransferIn, request)
        membership = services.ownership_transfer(
            principal=request.principal,
            membership_id=data["member_id"],
            origin=_origin(request),
        )
        return Response(MemberOut(membership).data)


class MemberViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):
    model = Membership
    serializer_class = MemberOut
    ordering = "created_at"
    # Leaving an org needs no admin rights; the service checks that removing someone else does.
    required_scopes = {"list": READ, "retrieve": READ, "partial_update": ADMIN, "destroy": READ}

    def safely_get_queryset(self, queryset: Any) -> Any:
        return queryset.select_related("user")

    @extend_schema(request=RoleIn, responses=MemberOut)
    def partial_update(self, request: OrgRequest, pk: str) -> Response:
        membership = self.get_object()
        data = valid_data(RoleIn, request)
        membership = services.membership_change_role(
            principal=request.principal,
            membership_id=membership.pk,
            role=data["role"],
            origin=_origin(request),
        )
        return Response(MemberOut(membership).data)

    def destroy(self, request: OrgRequest, pk: str) -> Response:
        membership = self.get_object()
        services.membership_remove(principal=request.principal, membership_id=membership.pk, origin=_origin(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class InvitationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):
    model = Invitation
    serializer_class = InvitationOut
    ordering = "-created_at"
    required_scopes = {"list": ADMIN, "retrieve": ADMIN, "create": ADMIN, "destroy": ADMIN}

    def safely_get_queryset(self, queryset: Any) -> Any:
        return queryset.select_related("invited_by")

    @extend_schema(request=InvitationIn, responses={201: InvitationOut, 402: PLAN_LIMIT})
    def create(self, request: OrgRequest) -> Response:
        data = valid_data(InvitationIn, request)
        issued = invitations.invitation_create(
            principal=request.principal,
            email=data["email"],
            role=data["role"],
            origin=_origin(request),
        )
        # The token goes to the invitee's inbox only; the API never returns it.
        return Response(InvitationOut(issued.invitation).data, status=status.HTTP_201_CREATED)

    def destroy(self, request: OrgRequest, pk: str) -> Response:
        invitation = self.get_object()
        invitations.invitation_revoke(principal=request.principal, invitation_id=invitation.pk, origin=_origin(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ApiKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):
    model = ApiKey
    serializer_class = ApiKeyOut
    ordering = "-created_at"
    required_scopes = {
        "list": ADMIN, "retrieve": ADMIN, "create": ADMIN, "destroy": ADMIN, "rotate": ADMIN, "revoke": ADMIN,
        "networks": ADMIN,
    }  # fmt: skip

    @extend_schema(request=ApiKeyIn, responses={201: IssuedKeyOut})
    def create(self, request: OrgRequest) -> Response:
        data = valid_data(ApiKeyIn, request)
        issued = services.api_key_create(
            principal=request.principal,
            name=data["name"],
            scopes=data["scopes"],
            expires_at=data.get("expires_at"),
            origin=_origin(request),
        )
        return Response(_issued_key(issued), status=status.HTTP_201_CREATED)

    @extend_schema(request=RotateIn, responses={201: IssuedKeyOut})
    @action(detail=True, methods=["post"])
    def rotate(self, request: OrgRequest, pk: str) -> Response:
        api_key = self.get_object()
        data = valid_data(RotateIn, request)
        issued = services.api_key_rotate(
            principal=request.principal,
            key_id=api_key.pk,
            grace=timedelta(hours=data["grace_hours"]),
            origin=_origin(request),
        )
        return Response(_issued_key(issued), status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=ApiKeyOut)
    @action(detail=True, methods=["post"])
    def revoke(self, request: OrgRequest, pk: str) -> Response:
        api_key = services.api_key_revoke(
            principal=request.principal, key_id=self.get_object().pk, origin=_origin(request)
        )
        return Response(ApiKeyOut(api_key).data)

    @extend_schema(request=NetworksIn, responses=ApiKeyOut, summary="Set the networks a key may be used from")
    @action(detail=True, methods=["post"])
    def networks(self, request: OrgRequest, pk: str) -> Response:
        key_id = self.get_object().pk  # another org's key is a 404 before its body is read
        data = valid_data(NetworksIn, request)
        api_key = key_guard.api_key_networks_set(
            principal=request.principal, key_id=key_id, networks=data["allowed_networks"],
            origin=_origin(request),
        )  # fmt: skip
        return Response(ApiKeyOut(api_key).data)

    def destroy(self, request: OrgRequest, pk: str) -> Response:
        services.api_key_revoke(principal=request.principal, key_id=self.get_object().pk, origin=_origin(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class AuditFilterIn(StrictSerializer):
    action = serializers.CharField(required=False, max_length=64)
    actor = serializers.CharField(required=False, max_length=255)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    cursor = serializers.CharField(required=False)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=200)


class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):
    model = AuditEvent
    serializer_class = AuditEventOut
    ordering = "-created_at"
    required_scopes = {"list": ADMIN, "retrieve": ADMIN}

    def safely_get_queryset(self, queryset: Any) -> Any:
        if self.action != "list":
            return queryset
        filters = AuditFilterIn(data=self.request.query_params.dict())
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        return selectors.audit_event_list(
            org=self.request.org,  # type: ignore[attr-defined]
            action=data.get("action"),
            actor=data.get("actor"),
            since=data.get("since"),
            until=data.get("until"),
        )

    @extend_schema(
        parameters=[
            OpenApiParameter("action", str, description="Action name or prefix, e.g. api_key."),
            OpenApiParameter("actor", str, description="Part of the actor's email or key prefix."),
            OpenApiParameter("since", str, description="ISO 8601 time, inclusive."),
            OpenApiParameter("until", str, description="ISO 8601 time, exclusive."),
        ]
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:  # only here for its schema
        return super().list(request, *args, **kwargs)
