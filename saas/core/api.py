"""The API's base classes: the one place where an API request gets its org, its permission check and its
rate limits. Every view under /api/v1/ inherits OrgScopedAPIView or OrgScopedViewSet (a test walks the URL
conf to make sure), so no view can forget any of the three.

Who the principal is (an API key or a member) is the accounts layer's business: it registers a resolver at
startup (see accounts/apps.py), keeping this layer free of imports from above.
"""

from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.viewsets import GenericViewSet

from saas.core.ratelimit import Bucket, enforce_rate_limits
from saas.core.tenancy import enter_org_scope, exit_org_scope


class PrincipalLike(Protocol):
    @property
    def organization(self) -> Any: ...
    @property
    def user(self) -> Any: ...
    @property
    def api_key(self) -> Any: ...

    def require(self, scope: str) -> None: ...


_resolve_principal: Callable[[Request], PrincipalLike] | None = None


def register_principal_resolver(resolver: Callable[[Request], PrincipalLike]) -> None:
    global _resolve_principal
    _resolve_principal = resolver


# An org's own API rate limit (its plan's, from billing, which sits above this layer): org -> limit or None.
_org_rate_limits: list[Callable[[Any], str | None]] = []


def register_org_rate_limit(limit: Callable[[Any], str | None]) -> None:
    _org_rate_limits.append(limit)


class OrgScopedMixin:
    """Resolve the principal and its org once, enter the org scope, apply rate limits, check the scope.

    `required_scopes` maps each action (viewsets) or lower-case HTTP method (plain views) to the scope it
    needs; an action missing from the map is refused, so a new endpoint is closed until someone decides.
    """

    required_scopes: ClassVar[dict[str, str]] = {}
    _org_scope_token: Any = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]  # authentication happens here
        if _resolve_principal is None:
            raise ImproperlyConfigured("No principal resolver registered (is the accounts app installed?)")
        principal = _resolve_principal(request)
        request.principal = principal  # type: ignore[attr-defined]
        request.org = principal.organization  # type: ignore[attr-defined]
        self._org_scope_token = enter_org_scope(principal.organization)
        enforce_rate_limits(request, self.rate_limit_buckets(principal))
        principal.require(self.required_scope(request))

    def required_scope(self, request: Request) -> str:
        method = (request.method or "").lower()
        action = getattr(self, "action", None) or method
        if action in self.required_scopes:
            return self.required_scopes[action]
        if method == "options" or not hasattr(self, method):
            return "read"  # no handler: dispatch answers 405 (or OPTIONS metadata) after this check
        raise ImproperlyConfigured(f"{type(self).__name__}.required_scopes has no entry for {action!r}")

    def rate_limit_buckets(self, principal: PrincipalLike) -> list[Bucket]:
        limits = settings.RATE_LIMITS
        org = principal.organization
        org_limit = next((limit for limit in (fn(org) for fn in _org_rate_limits) if limit), limits["org"])
        buckets = [Bucket("api:org", str(org.pk), org_limit)]
        if principal.api_key is not None:
            buckets.append(Bucket("api:key", str(principal.api_key.pk), limits["api_key"]))
        elif principal.user is not None:
            buckets.append(Bucket("api:user", str(principal.user.pk), limits["user"]))
        return buckets

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        if self._org_scope_token is not None:
            exit_org_scope(self._org_scope_token)
            self._org_scope_token = None
        return super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]


class OrgScopedAPIView(OrgScopedMixin, APIView):
    pass


class OrgScopedViewSet(OrgScopedMixin, GenericViewSet):
    """Querysets always start from `model.objects.for_org(request.org)`; views narrow them in
    `safely_get_queryset` and never override `get_queryset` (enforced at class creation)."""

    model: ClassVar[type[models.Model]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "get_queryset" in cls.__dict__:
            raise TypeError(f"{cls.__name__} overrides get_queryset: implement safely_get_queryset instead")

    lookup_value_regex = "[0-9a-fA-F-]{32,36}"

    def get_queryset(self) -> models.QuerySet[Any]:
        if getattr(self, "swagger_fake_view", False):  # OpenAPI generation: no request, no org, no rows
            return self.model.all_orgs.none()  # type: ignore[attr-defined]
        return self.safely_get_queryset(self.model.objects.for_org(self.request.org))  # type: ignore[attr-defined]

    def safely_get_queryset(self, queryset: models.QuerySet[Any]) -> models.QuerySet[Any]:
        return queryset


class StrictSerializer(serializers.Serializer):
    """Input serializers refuse fields they do not know: a typo must not be silently ignored."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)
