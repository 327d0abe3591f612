"""The API's base classes: the one place where an API request gets its org, its permission check and its
rate limits. Every view under /api/v1/ inherits OrgScopedAPIView or OrgScopedViewSet (a test walks the URL
conf to make sure), so no view can forget any of the three.

Who the principal is (an API key or a member) is the accounts layer's business: it registers a resolver at
startup (see accounts/apps.py), keeping this layer free of imports from above.
"""

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.http import QueryDict
from rest_framework import serializers
from rest_framework.exceptions import ParseError
from rest_framework.metadata import BaseMetadata, SimpleMetadata
from rest_framework.parsers import BaseParser, DataAndFiles
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.viewsets import GenericViewSet

from saas.core import memo
from saas.core.ratelimit import Bucket, Companion, enforce_rate_limits
from saas.core.tenancy import enter_org_scope, exit_org_scope
from saas.core.text import unstorable


def _refuse(where: str) -> ParseError:
    return ParseError(f"{where} holds a NUL character or an unpaired surrogate, which is not text.")


class TextCheckedParser:
    """A parser whose result is refused (400) when a string in it, a form field or a file name holds what
    PostgreSQL cannot store (saas/core/text.py): JSON may say `\\u0000`, and DictField, JSONField and the
    file name of an upload do not check it as CharField does."""

    def __init__(self, parser: BaseParser) -> None:
        self.parser = parser
        self.media_type = parser.media_type

    def __getattr__(self, name: str) -> Any:
        return getattr(self.parser, name)

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        parsed = self.parser.parse(stream, media_type, parser_context)
        data, files = (parsed.data, parsed.files) if isinstance(parsed, DataAndFiles) else (parsed, None)
        where = unstorable(dict(data.lists()) if isinstance(data, QueryDict) else data)
        if where is None and files:
            where = unstorable({name: [f.name for f in files.getlist(name)] for name in files})
        if where is not None:
            raise _refuse(f"The request body ({where})")
        return parsed


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


# An org's own rate limits (its plan's, from billing, which sits above this layer): org -> {bucket: rate} for
# the buckets its plan sets: "org" (the API's general org limit), "<endpoint>:org" and "<endpoint>:key" (the
# endpoints of settings.ENDPOINT_RATE_LIMITS); a bucket it leaves out takes the server's rate.
_plan_rate_limits: list[Callable[[Any], Mapping[str, str]]] = []


def register_plan_rate_limits(limits: Callable[[Any], Mapping[str, str]]) -> None:
    _plan_rate_limits.append(limits)


def _plan_rates(org: Any) -> dict[str, str]:
    rates: dict[str, str] = {}
    for limits in _plan_rate_limits:
        rates.update({bucket: rate for bucket, rate in limits(org).items() if rate})
    return rates


class ApiMetadata(SimpleMetadata):
    """What OPTIONS answers: the view's name, description and media types, and where the schema is.

    DRF's default also describes each writable action from `get_serializer()`, after `get_object()` for PUT:
    a 500 on views without an output serializer, and wrong elsewhere (our input serializers are not the
    output ones). The OpenAPI schema is the one description of requests and responses.
    """

    def determine_metadata(self, request: Request, view: Any) -> dict[str, Any]:
        return {
            "name": view.get_view_name(),
            "description": view.get_view_description(),
            "renders": [renderer.media_type for renderer in view.renderer_classes],
            "parses": [parser.media_type for parser in view.parser_classes],
            "schema": "/api/schema/",
        }


class OrgScopedMixin:
    """Resolve the principal and its org once, enter the org scope, apply rate limits, check the scope.

    `required_scopes` maps each action (viewsets) or lower-case HTTP method (plain views) to the scope it
    needs; an action missing from the map is refused, so a new endpoint is closed until someone decides.
    """

    required_scopes: ClassVar[dict[str, str]] = {}
    # Endpoints that do costly work (an answer from a model, an upload to ingest) name their own rate-limit
    # bucket per action or method, as in required_scopes: {"post": "ask"}. Their requests count in that
    # endpoint's buckets (per org, and per key or member; settings.ENDPOINT_RATE_LIMITS, a plan may set its own)
    # instead of the API's general ones, so a burst of asks cannot use up what GET calls need, nor the reverse.
    rate_limit_endpoints: ClassVar[dict[str, str]] = {}
    metadata_class: str | type[BaseMetadata] | None = ApiMetadata
    # Strings PostgreSQL cannot store are refused in the body, the query and the headers. The gateway's
    # endpoints leave the body to the gateway, which refuses them itself and records the refusal.
    check_body_text: ClassVar[bool] = True
    _org_scope_token: Any = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """The checks, on copies of keys and plans that may be assumed current (an API-key view's memo block,
        saas.core.memo): before any outcome stands, what was assumed is confirmed, by the rate-limit script or
        else by a read of its own. A copy found stale (memo.Stale) has the checks run again on fresh copies."""
        try:
            self._checks(request, *args, **kwargs)
            if memo.assumptions_hold():
                return
        except memo.Stale:
            pass
        except Exception:
            if memo.assumptions_hold():  # an error decided on an assumed copy is given only if the copy was current
                raise
        memo.stop_assuming()
        self._leave_org_scope()
        for decided in ("_user", "_auth", "_authenticator"):  # DRF authenticates again on the next read
            request.__dict__.pop(decided, None)
        self._checks(request, *args, **kwargs)

    def _checks(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]  # authentication happens here
        if _resolve_principal is None:
            raise ImproperlyConfigured("No principal resolver registered (is the accounts app installed?)")
        principal = _resolve_principal(request)
        request.principal = principal  # type: ignore[attr-defined]
        request.org = principal.organization  # type: ignore[attr-defined]
        self._org_scope_token = enter_org_scope(principal.organization)
        enforce_rate_limits(request, self.rate_limit_buckets(principal, self.rate_limit_endpoint(request)),
                            self.rate_limit_companion(request, principal))  # fmt: skip
        principal.require(self.required_scope(request))
        where = unstorable(dict(request.query_params.lists()), "query") or unstorable(
            {name: value for name, value in request.headers.items()}, "header"
        )
        if where is not None:
            raise _refuse(where)

    def get_parsers(self) -> list[Any]:
        parsers = super().get_parsers()  # type: ignore[misc]
        return [TextCheckedParser(parser) for parser in parsers] if self.check_body_text else parsers

    def required_scope(self, request: Request) -> str:
        method = (request.method or "").lower()
        action = getattr(self, "action", None) or method
        if action in self.required_scopes:
            return self.required_scopes[action]
        if method == "options" or not hasattr(self, method):
            return "read"  # no handler: dispatch answers 405 (or OPTIONS metadata) after this check
        raise ImproperlyConfigured(f"{type(self).__name__}.required_scopes has no entry for {action!r}")

    def rate_limit_endpoint(self, request: Request) -> str | None:
        method = (request.method or "").lower()
        return self.rate_limit_endpoints.get(getattr(self, "action", None) or method)

    def rate_limit_buckets(self, principal: PrincipalLike, endpoint: str | None = None) -> list[Bucket]:
        org = principal.organization
        plan = _plan_rates(org)
        who = principal.api_key or principal.user
        if endpoint is not None:
            rates = {**settings.ENDPOINT_RATE_LIMITS[endpoint]}
            rates = {per: plan.get(f"{endpoint}:{per}", rate) for per, rate in rates.items()}
            buckets = []
            if who is not None:  # a key and a member each have their own; the org's spans them all
                buckets.append(Bucket(f"api:{endpoint}:key", str(who.pk), rates["key"]))
            return [*buckets, Bucket(f"api:{endpoint}:org", str(org.pk), rates["org"])]
        # The key's (or member's) bucket first: a request it refuses is not counted against the whole org.
        limits = settings.RATE_LIMITS
        buckets = []
        if principal.api_key is not None:
            buckets.append(Bucket("api:key", str(principal.api_key.pk), limits["api_key"]))
        elif principal.user is not None:
            buckets.append(Bucket("api:user", str(principal.user.pk), limits["user"]))
        return [*buckets, Bucket("api:org", str(org.pk), plan.get("org", limits["org"]))]

    def rate_limit_companion(self, request: Request, principal: PrincipalLike) -> Companion | None:
        """Work for the rate-limit round trip to carry when the request is allowed (saas.core.ratelimit)."""
        return None

    def _leave_org_scope(self) -> None:
        if self._org_scope_token is not None:
            exit_org_scope(self._org_scope_token)
            self._org_scope_token = None

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        self._leave_org_scope()
        return super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        # An unexpected error skips finalize_response: the org scope must not outlive the request anyway
        # (the next request on this thread and context would find it; seen when a view raised a 500).
        try:
            return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]
        finally:
            self._leave_org_scope()


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


NUMBER_FIELDS = (serializers.IntegerField, serializers.FloatField, serializers.DecimalField)


def _wrong_type(field: serializers.Field, value: Any) -> str | None:
    """What a JSON value should have been where DRF would coerce it: a CharField turns numbers into text, and
    number fields take booleans (`false` is 0); the schema allows neither."""
    if isinstance(field, serializers.CharField) and value is not None and not isinstance(value, str):
        return "Not a valid string."
    strings = isinstance(field, serializers.ListField) and isinstance(field.child, serializers.CharField)
    if strings and isinstance(value, list) and any(not isinstance(item, str) for item in value):
        return "Not a valid string."
    if isinstance(field, NUMBER_FIELDS) and isinstance(value, bool):
        return "A valid number is required."
    return None


class StrictSerializer(serializers.Serializer):
    """Input serializers refuse fields they do not know (a typo must not be silently ignored), a number or a
    boolean where the schema says string, and a boolean where it says number."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
            if not isinstance(data, QueryDict):
                wrong = {name: _wrong_type(field, data[name]) for name, field in self.fields.items() if name in data}
                if any(wrong.values()):
                    raise serializers.ValidationError({name: [why] for name, why in wrong.items() if why})
        return super().to_internal_value(data)
