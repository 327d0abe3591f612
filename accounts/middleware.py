"""Browser-side tenancy and brute-force protection.

OrgMiddleware resolves `request.org` once for every browser view under /o/<org_slug>/: the signed-in user
must be a member, otherwise the org does not exist for them (404). The org is then in scope for the whole
request, and remembered in the session for `/` and for the session-authenticated API.
"""

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from accounts import selectors
from accounts.authentication import CURRENT_ORG_SESSION_KEY, client_ip
from accounts.permissions import principal_for_member
from saas.core.errors import application_error_response
from saas.core.ratelimit import Bucket, RateLimited, enforce_rate_limits
from saas.core.tenancy import org_scope


class OrgMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.org = None  # type: ignore[attr-defined]
        request.membership = None  # type: ignore[attr-defined]
        request.principal = None  # type: ignore[attr-defined]
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view_func: Any, view_args: Any, view_kwargs: dict[str, Any]
    ) -> HttpResponse | None:
        slug = view_kwargs.get("org_slug")
        if slug is None:
            return None
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        membership = selectors.membership_get_for_user(user=request.user, org_slug=slug)  # type: ignore[arg-type]
        if membership is None:
            raise Http404("No such org")
        request.org = membership.organization  # type: ignore[attr-defined]
        request.membership = membership  # type: ignore[attr-defined]
        request.principal = principal_for_member(membership)  # type: ignore[attr-defined]
        if request.session.get(CURRENT_ORG_SESSION_KEY) != str(membership.organization_id):
            request.session[CURRENT_ORG_SESSION_KEY] = str(membership.organization_id)
        # The view runs here, inside the scope: under ASGI, process_view and __call__ do not share a context,
        # so a scope entered here could not be left from there. Being last, this skips no other process_view.
        with org_scope(membership.organization):
            return view_func(request, *view_args, **view_kwargs)  # type: ignore[no-any-return]


class AuthRateLimitMiddleware:
    """Per-IP limits on the forms that guess or spend: sign-in, sign-up, password reset (POSTs only)."""

    LIMITED = {
        "account_login": "login",
        "account_signup": "signup",
        "account_reset_password": "password_reset",
    }

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self._paths: dict[str, str] | None = None

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST":
            if self._paths is None:
                self._paths = {reverse(name): group for name, group in self.LIMITED.items()}
            group = self._paths.get(request.path)
            if group is not None:
                try:
                    enforce_rate_limits(
                        request,
                        [
                            Bucket(
                                f"auth:{group}",
                                client_ip(request) or "unknown",
                                settings.RATE_LIMITS["auth_ip"],
                            )
                        ],
                    )
                except RateLimited as exc:
                    return rate_limited_response(request, exc)
        return self.get_response(request)


def rate_limited_response(request: HttpRequest, exc: RateLimited) -> HttpResponse:
    if "text/html" in request.headers.get("Accept", ""):
        response = render(request, "429.html", {"retry_after": exc.retry_after}, status=429)
        response["Retry-After"] = str(exc.retry_after)
        return response
    return application_error_response(exc)  # type: ignore[no-any-return]
