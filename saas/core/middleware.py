from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from saas.core.errors import error_response


class BodySizeLimitMiddleware:
    """DRF reads JSON bodies without Django's DATA_UPLOAD_MAX_MEMORY_SIZE check: refuse oversized API bodies
    (by their declared length) before anything reads them. File uploads set their own limits."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/api/") and not (request.content_type or "").startswith("multipart/"):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return error_response("malformed_request", "Invalid Content-Length header.", 400)
            limit = settings.API_MAX_BODY_BYTES
            if length > limit:
                return error_response(
                    "too_large",
                    f"The request body is {length} bytes; the limit is {limit}.",
                    413,
                    {"limit": limit},
                )
        return self.get_response(request)
