"""Signal receivers: thin, each hands over to a service."""

from typing import Any

from allauth.account.signals import password_changed, password_reset, password_set
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import transaction
from django.dispatch import receiver

from accounts import services
from accounts.models import User
from saas.core import events
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


@receiver(user_logged_out)
def close_sockets_of_session(sender: Any, request: Any, user: Any = None, **kwargs: Any) -> None:
    """The websockets this session opened close at once (4401), the person's other sessions keep theirs."""
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    transaction.on_commit(lambda: events.session_ended(session_key), robust=True)


@receiver(password_changed)
@receiver(password_set)
@receiver(password_reset)
def recheck_sockets_of_user(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    """Sessions signed in with the old password end (Django's session hash): so do their websockets."""
    if user is not None:
        transaction.on_commit(lambda: events.access_changed(user_id=user.pk), robust=True)
