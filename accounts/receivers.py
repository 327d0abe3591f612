"""Signal receivers: thin, each hands over to a service."""

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver

from accounts import services
from accounts.models import User
from saas.core.client_ip import client_ip


def _origin(request: Any) -> services.Origin:
    if request is None:
        return services.Origin()
    return services.Origin(ip=client_ip(request), user_agent=request.META.get("HTTP_USER_AGENT", ""))


@receiver(user_logged_in)
def audit_sign_in(sender: Any, request: Any, user: User, **kwargs: Any) -> None:
    services.sign_in_record(user=user, action="user.signed_in", origin=_origin(request))


@receiver(user_login_failed)
def audit_failed_sign_in(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    email = str(credentials.get("email") or credentials.get("username") or "")
    user = User.objects.filter(email__iexact=email).first() if email else None
    if user is not None:  # unknown addresses are not anyone's data: nothing to record
        services.sign_in_record(user=user, action="user.sign_in_failed", origin=_origin(request))
