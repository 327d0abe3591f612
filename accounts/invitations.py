"""Invitations: an admin invites an address with a role; the token goes only into the email (its hash is
stored), and accepting it makes a membership. Checked against the plan's members limit, audited, emailed only
after the transaction commits."""

import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.mail import BadHeaderError, EmailMessage
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.utils import timezone

from accounts import permissions
from accounts.models import Invitation, Membership, Organization, User
from accounts.permissions import ADMIN, Principal
from accounts.services import Origin, audit_record, email_mark_verified, secret_hash
from saas.core import events
from saas.core.errors import ApplicationError, Conflict, NotFound, PermissionDenied
from saas.core.tenancy import org_scope

logger = logging.getLogger(__name__)

INVITATION_TTL = timedelta(hours=72)


class Gone(ApplicationError):
    status = 410
    code = "gone"


@dataclass(frozen=True)
class IssuedInvitation:
    invitation: Invitation
    token: str  # only ever in the email; never stored, never returned by the API

    @property
    def accept_path(self) -> str:
        return f"/invitations/{self.token}/"


# The plan's members limit, asked of billing (which sits above accounts and registers at startup): a callable
# org -> int | None (None: no limit).
_members_limits: list[Any] = []


def register_members_limit(limit: Any) -> None:
    _members_limits.append(limit)


def _check_members_limit(org: Organization, *, adding_invitation: bool) -> None:
    """Members plus open invitations may not pass the plan's limit. The caller holds the org row lock, so two
    invitations or acceptances at once cannot both take the last seat."""
    limits = [limit for limit in (fn(org) for fn in _members_limits) if limit is not None]
    if not limits:
        return
    limit = min(limits)
    members = Membership.objects.for_org(org).count()
    seats = members
    if adding_invitation:
        seats += Invitation.objects.for_org(org).filter(accepted_at__isnull=True, revoked_at__isnull=True,
                                                         expires_at__gt=timezone.now()).count()  # fmt: skip
    if seats >= limit:
        raise ApplicationError(
            f"This org's plan allows {limit} members ({members} now"
            + (f", {seats - members} invited" if seats > members else "") + "). Upgrade the plan to add more.",
            code="members_limit", status=402,
            details={"limit": "members", "allowed": limit, "members": members, "invited": seats - members,
                     "upgrade_url": f"/o/{org.slug}/billing/"},
        )  # fmt: skip


@transaction.atomic
def invitation_create(*, principal: Principal, email: str, role: str, origin: Origin | None = None) -> IssuedInvitation:
    principal.require(ADMIN)
    email = User.objects.normalize_email(email.strip()).lower()
    if role not in Membership.Role.values:
        raise ApplicationError(
            f"Unknown role {role!r}.",
            code="invalid",
            details={"fields": {"role": [f"One of {Membership.Role.values}."]}},
        )
    if not permissions.can_grant(principal, role):
        raise PermissionDenied("Only owners can invite owners.", code="insufficient_role")
    org = principal.organization
    if Membership.objects.for_org(org).filter(user__email__iexact=email).exists():
        raise Conflict(f"{email} is already a member of this org.", code="already_member")
    token = secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            Organization.objects.select_for_update().filter(pk=org.pk).first()
            # Re-inviting replaces the open invitation (and its token) rather than piling up a second one.
            Invitation.objects.for_org(org).filter(
                email__iexact=email, accepted_at__isnull=True, revoked_at__isnull=True
            ).update(revoked_at=timezone.now())
            _check_members_limit(org, adding_invitation=True)
            invitation = Invitation.objects.for_org(org).create(
                organization=org,
                email=email,
                role=role,
                token_hash=secret_hash(token),
                invited_by=principal.user,
                expires_at=timezone.now() + INVITATION_TTL,
            )
    except IntegrityError:  # a concurrent invitation to the same address won the race
        raise Conflict(f"An invitation to {email} is being sent right now.", code="invitation_in_flight") from None
    issued = IssuedInvitation(invitation, token)
    audit_record(
        org=org, action="invitation.created", principal=principal, target=invitation, target_label=email,
        origin=origin, metadata={"role": role},
    )  # fmt: skip
    # The email is built (and its headers checked) before anything is committed: a name that cannot go into a
    # subject line fails the whole invitation instead of leaving one that was never sent. Only the sending waits
    # for the commit, and a mail server that is down is logged, not turned into a 500 after the commit.
    message = _invitation_email(issued, org_name=org.name, inviter=principal.label)
    transaction.on_commit(lambda: _send_invitation_email(message))
    return issued


def _invitation_email(issued: IssuedInvitation, *, org_name: str, inviter: str) -> EmailMessage:
    context = {
        "org_name": org_name,
        "inviter": inviter,
        "role": issued.invitation.get_role_display(),
        "accept_url": settings.SITE_URL.rstrip("/") + issued.accept_path,
        "expires_at": issued.invitation.expires_at,
    }
    message = EmailMessage(
        subject=f"{inviter} invited you to {org_name} on Crewdesk",
        body=render_to_string("accounts/email/invitation.txt", context),
        to=[issued.invitation.email],
    )
    try:
        message.message()  # raises BadHeaderError for a line break in a header
    except BadHeaderError as exc:
        raise ApplicationError("The invitation email cannot be built from this org's name.", code="invalid") from exc
    return message


def _send_invitation_email(message: EmailMessage) -> None:
    try:
        message.send()
    except Exception:  # the invitation stands (listed, revocable, re-sendable by inviting again)
        logger.exception("invitation email not sent", extra={"invitation_to_domain": message.to[0].rpartition("@")[2]})


@transaction.atomic
def invitation_revoke(*, principal: Principal, invitation_id: Any, origin: Origin | None = None) -> Invitation:
    principal.require(ADMIN)
    invitation = Invitation.objects.for_org(principal.organization).select_for_update().filter(pk=invitation_id).first()
    if invitation is None:
        raise NotFound("No such invitation in this org.")
    if invitation.accepted_at:
        raise Conflict("This invitation was already accepted.", code="already_accepted")
    if invitation.revoked_at is None:
        invitation.revoked_at = timezone.now()
        invitation.save(update_fields=["revoked_at", "updated_at"])
        audit_record(
            org=principal.organization, action="invitation.revoked", principal=principal, target=invitation,
            target_label=invitation.email, origin=origin,
        )  # fmt: skip
    return invitation


def invitation_get_by_token(*, token: str, for_update: bool = False) -> Invitation:
    """Cross-org by nature: the token is the only thing the invitee has."""
    if not token or len(token) > 100:
        raise NotFound("This invitation link is not valid.", code="invitation_not_found")
    queryset = Invitation.all_orgs.select_related("organization", "invited_by")
    if for_update:
        queryset = queryset.select_for_update(of=("self",))
    invitation = queryset.filter(token_hash=secret_hash(token)).first()
    if invitation is None:
        raise NotFound("This invitation link is not valid.", code="invitation_not_found")
    return invitation


def invitation_check_open(invitation: Invitation) -> None:
    status = invitation.status
    if status == "accepted":
        raise Gone("This invitation has already been used.", code="invitation_used")
    if status == "revoked":
        raise Gone("This invitation was withdrawn by the org's admins.", code="invitation_revoked")
    if status == "expired":
        raise Gone("This invitation has expired: ask for a new one.", code="invitation_expired")


@transaction.atomic
def invitation_accept(*, token: str, user: User, origin: Origin | None = None) -> Membership:
    invitation = invitation_get_by_token(token=token, for_update=True)
    invitation_check_open(invitation)
    if invitation.email.lower() != user.email.lower():
        raise PermissionDenied(
            f"This invitation was sent to {invitation.email}; sign in with that address to accept it.",
            code="invitation_email_mismatch",
        )
    org = invitation.organization
    with org_scope(org):
        membership = Membership.objects.filter(user=user).first()
        if membership is None:
            Organization.objects.select_for_update().filter(pk=org.pk).first()
            _check_members_limit(org, adding_invitation=False)
            membership = Membership.objects.create(organization=org, user=user, role=invitation.role)
        invitation.accepted_at = timezone.now()
        invitation.accepted_by = user
        invitation.save(update_fields=["accepted_at", "accepted_by", "updated_at"])
        audit_record(
            org=org, action="invitation.accepted", user=user, target=invitation, target_label=user.email,
            origin=origin, metadata={"role": membership.role},
        )  # fmt: skip
    email_mark_verified(user)  # the token arrived at this address: it is proven
    transaction.on_commit(lambda: events.access_changed(user_id=user.pk), robust=True)  # open tabs join the team
    return membership
