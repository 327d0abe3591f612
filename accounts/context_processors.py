from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from accounts import notifications, selectors


def org_context(request: HttpRequest) -> dict[str, Any]:
    """The org switcher and what the current member may do, for every template."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    principal = getattr(request, "principal", None)
    org = getattr(request, "org", None)
    return {
        # Read only when a template shows the bell (accounts/_bell.html): two small queries on the org's pages.
        "bell": SimpleLazyObject(lambda: notifications.notification_bell(org=org, user=user)) if org else None,
        "my_memberships": selectors.membership_list_for_user(user=user),  # type: ignore[arg-type]
        "current_org": getattr(request, "org", None),
        "org_scopes": principal.scopes if principal else frozenset(),
        "org_role": principal.role if principal else None,
    }
