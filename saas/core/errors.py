"""Our error type and the one JSON shape every error takes, in the API and in JSON endpoints:

    {"error": {"code": "not_found", "message": "Not found.", "details": {...}, "request_id": "..."}}

Services raise ApplicationError (or a subclass); the DRF handler below and the Django 404/500 handlers
render it. Nothing else builds error bodies by hand.
"""

import logging
import math
from typing import Any

import redis
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django_guid import get_guid
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response


class ApplicationError(Exception):
    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.status = status or self.status
        self.details = details or {}


class NotFound(ApplicationError):
    status = 404
    code = "not_found"


class PermissionDenied(ApplicationError):
    status = 403
    code = "permission_denied"


class Conflict(ApplicationError):
    status = 409
    code = "conflict"


class ServiceUnavailable(ApplicationError):
    status = 503
    code = "unavailable"


logger = logging.getLogger(__name__)

# A store that cannot be reached for a moment (Redis down or out of free connections, the database's pool
# exhausted or its connection lost) is an outage, not a bug: the caller is told to retry, in the one shape.
STORE_OUTAGES = (redis.RedisError, OperationalError, InterfaceError)


class StoreOutage(ServiceUnavailable):
    retry_after = 1


def as_store_outage(exc: BaseException) -> StoreOutage | None:
    if not isinstance(exc, STORE_OUTAGES):
        return None
    logger.error("store unavailable: %s", type(exc).__name__, exc_info=exc)
    return StoreOutage("A service we need is unavailable for a moment. Try again shortly.")


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}, "request_id": get_guid()}}


def error_response(code: str, message: str, status: int, details: dict[str, Any] | None = None) -> JsonResponse:
    return JsonResponse(error_body(code, message, details), status=status)


def application_error_response(exc: ApplicationError, response_class: Any = None) -> Any:
    """Our errors as a response (DRF's Response in the API, JsonResponse elsewhere), with the headers
    their status calls for."""
    body = error_body(exc.code, exc.message, exc.details)
    response = response_class(body, status=exc.status) if response_class else JsonResponse(body, status=exc.status)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:  # whole seconds, at least 1 (HTTP's delay-seconds)
        response["Retry-After"] = str(max(1, math.ceil(float(retry_after))))
    for name, value in getattr(exc, "headers", {}).items():
        response[name] = value
    if exc.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


# DRF's own exceptions, by class, to our codes. Order matters: subclasses first.
_DRF_CODES: list[tuple[type[drf_exceptions.APIException], str]] = [
    (drf_exceptions.ValidationError, "invalid"),
    (drf_exceptions.ParseError, "malformed_request"),
    (drf_exceptions.NotAuthenticated, "not_authenticated"),
    (drf_exceptions.AuthenticationFailed, "authentication_failed"),
    (drf_exceptions.PermissionDenied, "permission_denied"),
    (drf_exceptions.NotFound, "not_found"),
    (drf_exceptions.MethodNotAllowed, "method_not_allowed"),
    (drf_exceptions.NotAcceptable, "not_acceptable"),
    (drf_exceptions.UnsupportedMediaType, "unsupported_media_type"),
    (drf_exceptions.Throttled, "rate_limited"),
]


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    exc = as_store_outage(exc) or exc
    if isinstance(exc, ApplicationError):
        return application_error_response(exc, response_class=Response)
    if isinstance(exc, DjangoValidationError):
        exc = drf_exceptions.ValidationError(detail=exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    if isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()

    # Imported here: rest_framework.views loads the authentication classes, which import our services.
    from rest_framework.views import exception_handler as drf_default_handler

    response = drf_default_handler(exc, context)
    if response is None or not isinstance(exc, drf_exceptions.APIException):
        return response  # an unexpected error: Django's 500 handler renders it
    code = next((c for cls, c in _DRF_CODES if isinstance(exc, cls)), "error")
    if isinstance(exc, drf_exceptions.ValidationError):
        message, details = "The request is invalid.", {"fields": exc.detail}
    else:
        message, details = str(exc.detail), {}
    response.data = error_body(code, message, details)
    return response


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith(("/api/", "/v1/")) or "application/json" in request.headers.get("Accept", "")


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _wants_json(request):
        return error_response("not_found", "Not found.", 404)
    return render(request, "404.html", status=404)


def handler500(request: HttpRequest) -> HttpResponse:
    if _wants_json(request):
        return error_response("server_error", "Something went wrong on our side; quote the request id.", 500)
    return render(request, "500.html", {"request_id": get_guid()}, status=500)
