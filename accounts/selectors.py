"""Reads for accounts. Cross-org reads (a user's own memberships) use `all_orgs` here and nowhere else."""

from datetime import datetime
from typing import Any
from uuid import UUID

from django.db.models import Q, QuerySet

from accounts.models import ApiKey, AuditEvent, Invitation, Membership, Notification, Organization, User


def _memberships(user: User) -> QuerySet[Membership]:
    # An org being deleted is gone for everyone from the moment its owner asked (accounts/erasure.py).
    return Membership.all_orgs.filter(user=user, organization__deletion_requested_at__isnull=True)


def membership_org_slugs(*, user: User) -> dict[UUID, str]:
    """The person's teams: id -> short name (the name their pages' URLs carry)."""
    return dict(_memberships(user).values_list("organization_id", "organization__slug"))


def membership_list_for_user(*, user: User) -> list[Membership]:
    return list(_memberships(user).select_related("organization").order_by("organization__name"))


def membership_get_for_user(
    *, user: User, org_slug: str | None = None, org_id: UUID | str | None = None
) -> Membership | None:
    queryset = _memberships(user).select_related("organization", "user")
    if org_slug is not None:
        return queryset.filter(organization__slug=org_slug).first()
    if org_id is not None:
        try:
            return queryset.filter(organization_id=UUID(str(org_id))).first()
        except ValueError:
            return None
    return queryset.order_by("created_at").first()


def membership_get_for_user_id(*, user_id: Any, org_id: UUID | str) -> Membership | None:
    """As membership_get_for_user(org_id=...), for a user known by id only: the user comes in the same query
    (a websocket's access check reads the session's user with the rights; the caller verifies the session)."""
    try:
        org_id = UUID(str(org_id))
    except ValueError:
        return None
    return (
        Membership.all_orgs.select_related("organization", "user")
        .filter(user_id=user_id, organization_id=org_id, organization__deletion_requested_at__isnull=True)
        .first()
    )


def member_list(*, org: Organization, search: str = "", role: str = "") -> QuerySet[Membership]:
    queryset = Membership.objects.for_org(org).select_related("user").order_by("created_at", "id")
    if search:
        queryset = queryset.filter(user__email__icontains=search)
    if role:
        queryset = queryset.filter(role=role)
    return queryset


def invitation_list(*, org: Organization, open_only: bool = False) -> QuerySet[Invitation]:
    queryset = Invitation.objects.for_org(org).select_related("invited_by").order_by("-created_at", "id")
    if open_only:
        queryset = queryset.filter(accepted_at__isnull=True, revoked_at__isnull=True)
    return queryset


def api_key_list(*, org: Organization, search: str = "") -> QuerySet[ApiKey]:
    queryset = ApiKey.objects.for_org(org).select_related("created_by", "replaced_by").order_by("-created_at", "id")
    if search:
        queryset = queryset.filter(Q(name__icontains=search) | Q(prefix__istartswith=search.rstrip(".…")))
    return queryset


def audit_event_list(
    *,
    org: Organization,
    action: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[AuditEvent]:
    queryset = AuditEvent.objects.for_org(org).order_by("-created_at", "-id")
    if action:
        queryset = queryset.filter(action__startswith=action)
    if actor:
        queryset = queryset.filter(actor_label__icontains=actor)
    if since:
        queryset = queryset.filter(created_at__gte=since)
    if until:
        queryset = queryset.filter(created_at__lt=until)
    return queryset


def audit_action_names(*, org: Organization) -> list[str]:
    return list(AuditEvent.objects.for_org(org).order_by("action").values_list("action", flat=True).distinct())


def notification_list(*, org: Organization, user: User, limit: int = 20) -> list[Notification]:
    return list(Notification.objects.for_org(org).filter(user=user).order_by("-created_at")[:limit])
