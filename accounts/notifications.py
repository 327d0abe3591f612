"""The notification bell: a member's notifications in one org, read and unread (reads and writes).

Notifications are written by `services.notify_members` (a scheduled run finished, an export is ready, the
allowance is nearly used...). They belong to one member in one org: another member's or another org's
notification is not found, whatever its id.
"""

from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme

from accounts.models import Notification, Organization, User
from saas.core.errors import NotFound

BELL_SIZE = 8  # the latest notifications the bell's dropdown lists


def notification_queryset(*, org: Organization, user: User, unread_only: bool = False) -> QuerySet[Notification]:
    queryset = Notification.objects.for_org(org).filter(user=user).order_by("-created_at", "-id")
    return queryset.filter(read_at__isnull=True) if unread_only else queryset


def notification_unread_count(*, org: Organization, user: User) -> int:
    return notification_queryset(org=org, user=user, unread_only=True).count()


def notification_bell(*, org: Organization, user: User) -> dict[str, Any]:
    """What the bell shows: the unread count and the latest few notifications."""
    return {
        "unread": notification_unread_count(org=org, user=user),
        "latest": list(notification_queryset(org=org, user=user)[:BELL_SIZE]),
    }


def notification_get(*, org: Organization, user: User, notification_id: Any) -> Notification:
    try:
        pk = UUID(str(notification_id))
    except ValueError:
        raise NotFound("No such notification.", code="notification_not_found") from None
    found = notification_queryset(org=org, user=user).filter(pk=pk).first()
    if found is None:
        raise NotFound("No such notification.", code="notification_not_found")
    return found


def safe_target(url: str) -> str:
    """Where opening a notification leads: a path on this site only (a stored URL is never an open redirect)."""
    if url.startswith("/") and url_has_allowed_host_and_scheme(url, allowed_hosts=None):
        return url
    return ""


@transaction.atomic
def notification_mark_read(*, org: Organization, user: User, notification_id: Any) -> Notification:
    notification = notification_get(org=org, user=user, notification_id=notification_id)
    if notification.read_at is None:
        notification.read_at = timezone.now()
        notification.save(update_fields=["read_at", "updated_at"])
    return notification


def notifications_mark_all_read(*, org: Organization, user: User) -> int:
    return notification_queryset(org=org, user=user, unread_only=True).update(read_at=timezone.now())
