"""Who is calling the API: `Authorization: Bearer cdk_live_...` (an org's API key) or the browser session."""

from typing import Any

from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.exceptions import NotAuthenticated
from rest_framework.request import Request

from accounts import key_guard, selectors, services
from accounts.models import ApiKey
from accounts.permissions import Principal, principal_for_key, principal_for_member
from saas.core.client_ip import client_ip  # behind trusted proxies, the client's address (TRUSTED_PROXIES)
from saas.core.errors import NotFound, PermissionDenied

CURRENT_ORG_SESSION_KEY = "current_org_id"
ORG_HEADER = "X-Crewdesk-Org"


class ApiKeyUser:
    """request.user for a call made with an org's API key: authenticated, but nobody in particular."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, api_key: ApiKey) -> None:
        self.api_key = api_key

    def __str__(self) -> str:
        return f"API key {self.api_key.prefix}"


def request_origin(request: Any) -> services.Origin:
    """Where a request came from, for the audit log (pages, the API and allauth's hooks alike)."""
    return services.Origin(ip=client_ip(request), user_agent=request.headers.get("User-Agent", ""))


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ApiKeyUser, ApiKey] | None:
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer":
            return None  # not ours: the session may authenticate the request
        ip = client_ip(request)
        api_key = services.api_key_authenticate(secret=credentials.strip(), ip=ip)
        key_guard.check_key_origin(api_key=api_key, ip=ip)  # its allowed networks (403), and its spread
        return ApiKeyUser(api_key), api_key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class CsrfSessionAuthentication(SessionAuthentication):
    """The browser's own calls to the API: the session cookie, with CSRF enforced as usual."""


def resolve_principal(request: Request) -> Principal:
    """The org of an API request: the key's org, or for a session the org named by the X-Crewdesk-Org header,
    else the org last opened in the browser, else the user's first org."""
    if isinstance(request.auth, ApiKey):
        return principal_for_key(request.auth)
    user = request.user
    if not user or not user.is_authenticated:
        raise NotAuthenticated()
    requested = request.headers.get(ORG_HEADER)
    if requested:
        membership = selectors.membership_get_for_user(user=user, org_id=requested)  # type: ignore[arg-type]
        if membership is None:
            raise NotFound("No such org.", code="org_not_found")
    else:
        remembered = request.session.get(CURRENT_ORG_SESSION_KEY)
        membership = remembered and selectors.membership_get_for_user(user=user, org_id=remembered)  # type: ignore[arg-type]
        membership = membership or selectors.membership_get_for_user(user=user)  # type: ignore[arg-type]
    if membership is None:
        raise PermissionDenied("You are not a member of any org yet.", code="no_org")
    return principal_for_member(membership)
