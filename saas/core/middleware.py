from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from saas.core import http_limits
from saas.core.errors import error_response


class BodySizeLimitMiddleware:
    """Under WSGI, where the body is read only when a view asks for it: a declared length over the route's limit
    (saas.core.http_limits.body_limit) is refused with 413 before anything reads the body. Under ASGI the
    server entry point and the ASGI middleware have refused it already, before it was received."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return error_response("malformed_request", "Invalid Content-Length header.", 400)
        limit = http_limits.body_limit(request.method or "GET", request.path)
        if length > limit:
            return error_response("too_large", http_limits.too_large_message(limit, length), 413, {"limit": limit})
        return self.get_response(request)
