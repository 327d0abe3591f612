"""Writes for users, orgs, memberships, API keys and the audit log (invitations: accounts/invitations.py).

Every org-level change is checked against the acting Principal, runs in one transaction, and leaves an
AuditEvent. Emails and websocket events go out only after the transaction commits.
"""

import copy
import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Model, Q
from django.utils import timezone
from django.utils.text import slugify
from django_guid import get_guid

from accounts import permissions
from accounts.models import (
    ApiKey,
    AuditEvent,
    MemberContent,
    Membership,
    Notification,
    Organization,
    User,
)
from accounts.permissions import ADMIN, OWNER, Principal
from saas.core import events, on_loop
from saas.core.errors import ApplicationError, Conflict, NotFound, PermissionDenied
from saas.core.memo import Memo
from saas.core.memo import register as register_memo
from saas.core.retention import purge_batches, purgers
from saas.core.tenancy import org_scope

logger = logging.getLogger(__name__)

API_KEY_PREFIX = "cdk_live_"
API_KEY_PATTERN = re.compile(r"^cdk_live_([A-Za-z0-9]{8})_([A-Za-z0-9_-]{43})$")
LAST_USED_PRECISION = timedelta(seconds=60)
MAX_ROTATION_GRACE = timedelta(days=7)


@dataclass(frozen=True)
class Origin:
    """Where a request came from, for the audit log."""

    ip: str | None = None
    user_agent: str = ""


# --- Audit -------------------------------------------------------------------------------------------------


def audit_record(
    *,
    org: Organization,
    action: str,
    principal: Principal | None = None,
    user: User | None = None,
    target: Model | None = None,
    target_label: str = "",
    origin: Origin | None = None,
    metadata: dict[str, Any] | None = None,
) -> AuditEvent:
    actor_user = user or (principal.user if principal else None)
    actor_key = principal.api_key if principal else None
    label = principal.label if principal else (actor_user.email if actor_user else "system")
    origin = origin or Origin()
    return AuditEvent.all_orgs.create(
        organization=org,
        actor_user=actor_user,
        actor_api_key=actor_key,
        actor_label=label,
        action=action,
        target_type=target._meta.label_lower if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_label=target_label or (str(target) if target is not None else ""),
        ip=origin.ip,
        user_agent=origin.user_agent[:512],
        request_id=get_guid() or "",
        metadata=metadata or {},
    )


# --- Users and orgs ----------------------------------------------------------------------------------------


@transaction.atomic
def user_create(*, email: str, password: str | None) -> User:
    email = User.objects.normalize_email(email).lower()
    if User.objects.filter(email__iexact=email).exists():
        raise Conflict("A user with this email address already exists.", code="email_taken")
    user = User.objects.create_user(email=email, password=password)
    email_mark_verified(user)  # an operator's command names the address: it needs no confirmation email
    return user


def _free_slug(base: str) -> str:
    base = slugify(base)[:50].strip("-") or "team"
    slug = base
    while Organization.objects.filter(slug=slug).exists():
        slug = f"{base}-{secrets.token_hex(3)}"
    return slug


@transaction.atomic
def organization_create(
    *, name: str, owner: User, slug: str | None = None, origin: Origin | None = None
) -> Organization:
    name = name.strip()
    if not name:
        raise ApplicationError("An org needs a name.", code="invalid", details={"fields": {"name": ["Required."]}})
    if slug is not None:
        if not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?", slug):
            raise ApplicationError(
                "A slug is 1-50 lowercase letters, digits and dashes.",
                code="invalid",
                details={"fields": {"slug": ["Invalid slug."]}},
            )
        if Organization.objects.filter(slug=slug).exists():
            raise Conflict(f"The slug {slug!r} is taken.", code="slug_taken", details={"slug": slug})
    org = Organization.objects.create(name=name[:120], slug=slug or _free_slug(name))
    with org_scope(org):
        Membership.objects.create(organization=org, user=owner, role=Membership.Role.OWNER)
        audit_record(org=org, action="org.created", user=owner, target=org, origin=origin)
    return org


def organization_create_personal(*, user: User, origin: Origin | None = None) -> Organization:
    local_part = user.email.split("@")[0]
    return organization_create(name=f"{local_part}'s team", owner=user, origin=origin)


@transaction.atomic
def organization_update(*, principal: Principal, name: str, origin: Origin | None = None) -> Organization:
    principal.require(ADMIN)
    name = name.strip()
    if not name or len(name) > 120:
        raise ApplicationError(
            "The name must be 1-120 characters.",
            code="invalid",
            details={"fields": {"name": ["1-120 characters."]}},
        )
    org = Organization.objects.select_for_update().get(pk=principal.organization.pk)
    old = org.name
    if old != name:
        org.name = name
        org.save(update_fields=["name", "updated_at"])
        audit_record(
            org=org, action="org.settings_changed", principal=principal, target=org, origin=origin,
            metadata={"name": {"from": old, "to": name}},
        )  # fmt: skip
    return org


MAX_RETENTION_DAYS = 36500
RETENTION_FIELDS = {
    "conversations": "retain_conversations_days",
    "ledger_content": "retain_ledger_content_days",
    "exports": "retain_exports_days",
}


@transaction.atomic
def organization_retention_set(
    *, principal: Principal, days: dict[str, str], origin: Origin | None = None
) -> Organization:
    """How long the org keeps conversations and the ledger's prompts and answers (empty: until deleted)."""
    principal.require(ADMIN)
    values: dict[str, int | None] = {}
    errors: dict[str, list[str]] = {}
    for name, field in RETENTION_FIELDS.items():
        raw = (days.get(name) or "").strip()
        if not raw:
            values[field] = None
        elif raw.isdigit() and 1 <= int(raw) <= MAX_RETENTION_DAYS:
            values[field] = int(raw)
        else:
            errors[name] = [f"A number of days from 1 to {MAX_RETENTION_DAYS}, or empty to keep until deleted."]
    if errors:
        message = f"Retention is a number of days from 1 to {MAX_RETENTION_DAYS}, or empty to keep until deleted"
        raise ApplicationError(f"{message} (check: {', '.join(errors)}).", code="invalid", details={"fields": errors})
    org = Organization.objects.select_for_update().get(pk=principal.organization.pk)
    changes = {field: {"from": getattr(org, field), "to": value} for field, value in values.items()
               if getattr(org, field) != value}  # fmt: skip
    if changes:
        for field, value in values.items():
            setattr(org, field, value)
        org.save(update_fields=[*values, "updated_at"])
        audit_record(org=org, action="org.retention_changed", principal=principal, target=org, origin=origin,
                     metadata=changes)  # fmt: skip
    return org


@transaction.atomic
def organization_member_content_set(*, principal: Principal, policy: str, origin: Origin | None = None) -> Organization:
    """What happens to a member's documents and crews when they erase their account (accounts/erasure.py)."""
    principal.require(ADMIN)
    if policy not in MemberContent.values:
        raise ApplicationError(f"The policy is one of: {', '.join(MemberContent.values)}.", code="invalid",
                               details={"fields": {"member_content": ["Choose delete or transfer."]}})  # fmt: skip
    org = Organization.objects.select_for_update().get(pk=principal.organization.pk)
    if org.member_content_on_erasure != policy:
        change = {"from": org.member_content_on_erasure, "to": policy}
        org.member_content_on_erasure = policy
        org.save(update_fields=["member_content_on_erasure", "updated_at"])
        audit_record(org=org, action="org.member_content_policy_changed", principal=principal, target=org,
                     origin=origin, metadata=change)  # fmt: skip
    return org


def retention_purge(*, now: datetime | None = None, batch_size: int = 500) -> dict[str, int]:
    """The beat task's work: every org's content past its retention, store by store, in batches."""
    now = now or timezone.now()
    totals: dict[str, int] = {purger.store: 0 for purger in purgers}
    settings_in_use = Q()
    for purger in purgers:
        settings_in_use |= Q(**{f"{purger.setting}__isnull": False})
    for org in Organization.objects.filter(settings_in_use).iterator() if purgers else []:
        for purger in purgers:
            days = getattr(org, purger.setting)
            if days is None:
                continue
            with org_scope(org):
                totals[purger.store] += purge_batches(purger, org_id=org.pk, older_than=now - timedelta(days=days),
                                                      batch_size=batch_size)  # fmt: skip
    if any(totals.values()):
        logger.info("Retention purged %s", totals)
    return totals


def secret_hash(secret: str) -> str:
    """How an invitation token or an API key secret is stored: only its SHA-256 (both are long random strings)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def email_mark_verified(user: User) -> None:
    from allauth.account.models import EmailAddress

    EmailAddress.objects.update_or_create(
        user=user, email__iexact=user.email, defaults={"email": user.email, "verified": True, "primary": True}
    )


# --- Memberships -------------------------------------------------------------------------------------------


def _lock_owners(org: Organization) -> list[Membership]:
    # Every change that could remove an owner locks the owner rows first, so two concurrent demotions
    # cannot both see "another owner remains".
    return list(Membership.objects.for_org(org).select_for_update().filter(role=Membership.Role.OWNER))


def _membership_for_update(principal: Principal, membership_id: Any) -> Membership:
    membership = (
        Membership.objects.for_org(principal.organization)
        .select_for_update()
        .select_related("user")
        .filter(pk=membership_id)
        .first()
    )
    if membership is None:
        raise NotFound("No such member in this org.")
    return membership


@transaction.atomic
def membership_change_role(
    *, principal: Principal, membership_id: Any, role: str, origin: Origin | None = None
) -> Membership:
    principal.require(ADMIN)
    if role not in Membership.Role.values:
        raise ApplicationError(
            f"Unknown role {role!r}.",
            code="invalid",
            details={"fields": {"role": [f"One of {Membership.Role.values}."]}},
        )
    owners = _lock_owners(principal.organization)
    membership = _membership_for_update(principal, membership_id)
    old = membership.role
    if old == role:
        return membership
    if Membership.Role.OWNER in (old, role) and not principal.has(OWNER):
        raise PermissionDenied("Only owners can grant or remove the owner role.", code="insufficient_role")
    if old == Membership.Role.OWNER and len(owners) <= 1:
        raise Conflict("An org always keeps at least one owner: make someone else owner first.", code="last_owner")
    membership.role = role
    membership.save(update_fields=["role", "updated_at"])
    transaction.on_commit(lambda: events.access_changed(user_id=membership.user_id), robust=True)
    audit_record(
        org=principal.organization, action="member.role_changed", principal=principal, target=membership,
        target_label=membership.user.email, origin=origin, metadata={"from": old, "to": role},
    )  # fmt: skip
    return membership


@transaction.atomic
def membership_remove(*, principal: Principal, membership_id: Any, origin: Origin | None = None) -> None:
    owners = _lock_owners(principal.organization)
    membership = _membership_for_update(principal, membership_id)
    leaving = principal.user is not None and membership.user_id == principal.user.pk
    if not leaving:
        principal.require(ADMIN)
        if membership.role == Membership.Role.OWNER and not principal.has(OWNER):
            raise PermissionDenied("Only owners can remove an owner.", code="insufficient_role")
    if membership.role == Membership.Role.OWNER and len(owners) <= 1:
        raise Conflict("An org always keeps at least one owner: transfer ownership first.", code="last_owner")
    audit_record(
        org=principal.organization, action="member.left" if leaving else "member.removed", principal=principal,
        target=membership, target_label=membership.user.email, origin=origin, metadata={"role": membership.role},
    )  # fmt: skip
    user_id = membership.user_id
    membership.delete()
    transaction.on_commit(lambda: events.access_changed(user_id=user_id), robust=True)  # their sockets re-check


@transaction.atomic
def ownership_transfer(*, principal: Principal, membership_id: Any, origin: Origin | None = None) -> Membership:
    """The target becomes owner; the acting owner steps down to admin."""
    principal.require(OWNER)
    _lock_owners(principal.organization)
    target = _membership_for_update(principal, membership_id)
    if principal.membership is None or target.pk == principal.membership.pk:
        raise ApplicationError("Choose another member to transfer ownership to.", code="invalid")
    target.role = Membership.Role.OWNER
    target.save(update_fields=["role", "updated_at"])
    me = Membership.objects.for_org(principal.organization).select_for_update().get(pk=principal.membership.pk)
    me.role = Membership.Role.ADMIN
    me.save(update_fields=["role", "updated_at"])
    transaction.on_commit(lambda: events.access_changed(user_id=me.user_id), robust=True)
    audit_record(
        org=principal.organization, action="org.ownership_transferred", principal=principal, target=target,
        target_label=target.user.email, origin=origin,
    )  # fmt: skip
    return target


# --- API keys ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    secret: str  # the full key: shown once, then only its hash exists


def _validate_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - permissions.KEY_SCOPES)
    if unknown or not scopes:
        raise ApplicationError(
            "Choose at least one scope out of: " + ", ".join(sorted(permissions.KEY_SCOPES)) + ".",
            code="invalid",
            details={"fields": {"scopes": [f"Unknown scope {s!r}." for s in unknown] or ["Required."]}},
        )
    return sorted(set(scopes))


def _new_key(
    *, org: Organization, name: str, scopes: list[str], expires_at: datetime | None, user: User | None
) -> IssuedKey:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
    for _ in range(5):
        public = "".join(secrets.choice(alphabet) for _ in range(8))
        secret = f"{API_KEY_PREFIX}{public}_{secrets.token_urlsafe(32)}"
        try:
            with transaction.atomic():
                api_key = ApiKey.objects.for_org(org).create(
                    organization=org,
                    name=name,
                    prefix=f"{API_KEY_PREFIX}{public}",
                    secret_hash=secret_hash(secret),
                    scopes=scopes,
                    expires_at=expires_at,
                    created_by=user,
                )
            return IssuedKey(api_key, secret)
        except IntegrityError:  # a prefix collision: 57^8 makes this rare, but never fatal
            continue
    raise ApplicationError("Could not allocate a key; try again.", code="key_allocation_failed", status=503)


@transaction.atomic
def api_key_create(
    *,
    principal: Principal,
    name: str,
    scopes: list[str],
    expires_at: datetime | None = None,
    origin: Origin | None = None,
) -> IssuedKey:
    principal.require(ADMIN)
    name = name.strip()
    if not name or len(name) > 100:
        raise ApplicationError(
            "A key needs a name of 1-100 characters.",
            code="invalid",
            details={"fields": {"name": ["1-100 characters."]}},
        )
    scopes = _validate_scopes(scopes)
    if expires_at is not None and expires_at <= timezone.now():
        raise ApplicationError(
            "The expiry must be in the future.",
            code="invalid",
            details={"fields": {"expires_at": ["In the past."]}},
        )
    issued = _new_key(org=principal.organization, name=name, scopes=scopes, expires_at=expires_at, user=principal.user)
    audit_record(
        org=principal.organization, action="api_key.created", principal=principal, target=issued.api_key,
        origin=origin, metadata={"scopes": scopes, "expires_at": expires_at.isoformat() if expires_at else None},
    )  # fmt: skip
    return issued


def _key_for_update(principal: Principal, key_id: Any) -> ApiKey:
    api_key = ApiKey.objects.for_org(principal.organization).select_for_update().filter(pk=key_id).first()
    if api_key is None:
        raise NotFound("No such API key in this org.")
    return api_key


@transaction.atomic
def api_key_revoke(*, principal: Principal, key_id: Any, origin: Origin | None = None) -> ApiKey:
    principal.require(ADMIN)
    api_key = _key_for_update(principal, key_id)
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at", "updated_at"])
        audit_record(
            org=principal.organization,
            action="api_key.revoked",
            principal=principal,
            target=api_key,
            origin=origin,
        )
    return api_key


@transaction.atomic
def api_key_rotate(
    *, principal: Principal, key_id: Any, grace: timedelta = timedelta(hours=24), origin: Origin | None = None
) -> IssuedKey:
    """A new key with the same name, scopes and expiry; the old one keeps working for `grace`, then expires."""
    principal.require(ADMIN)
    if grace < timedelta(0) or grace > MAX_ROTATION_GRACE:
        raise ApplicationError(
            "The grace period is 0 to 168 hours.",
            code="invalid",
            details={"fields": {"grace_hours": ["0-168."]}},
        )
    old = _key_for_update(principal, key_id)
    if not old.is_active():
        raise Conflict("Only an active key can be rotated.", code="key_inactive")
    if old.replaced_by_id:
        raise Conflict("This key was already rotated; rotate its replacement instead.", code="already_rotated")
    issued = _new_key(
        org=principal.organization,
        name=old.name,
        scopes=old.scopes,
        expires_at=old.expires_at,
        user=principal.user,
    )
    grace_end = timezone.now() + grace
    old.expires_at = min(old.expires_at, grace_end) if old.expires_at else grace_end
    old.replaced_by = issued.api_key
    old.save(update_fields=["expires_at", "replaced_by", "updated_at"])
    audit_record(
        org=principal.organization, action="api_key.rotated", principal=principal, target=old, origin=origin,
        metadata={"new_key": issued.api_key.prefix, "old_key_expires_at": old.expires_at.isoformat()},
    )  # fmt: skip
    return issued


class KeyRejected(ApplicationError):
    status = 401
    code = "authentication_failed"


def _no_keys_yet() -> dict[str, ApiKey]:
    return {}


# Keys by secret hash, each with its org, filled as they are used (saas/core/memo.py): saving or deleting a
# key (revocation, rotation) or an org drops every process's copy before its next request.
key_memo = register_memo(Memo("api-keys", _no_keys_yet, max_age=lambda: settings.API_KEY_CACHE_SECONDS))
MAX_KEYS_KEPT = 10_000


def api_key_authenticate(*, secret: str, ip: str | None) -> ApiKey:
    """Cross-org by nature: the key is what tells us the org. Records last use (at most once a minute)."""
    if not API_KEY_PATTERN.match(secret):
        raise KeyRejected("Malformed API key: expected cdk_live_<8 characters>_<43 characters>.", code="malformed_key")
    hashed = secret_hash(secret)
    kept = key_memo.current()
    api_key = kept.get(hashed)
    if api_key is None:
        api_key = on_loop.blocking(ApiKey.all_orgs.select_related("organization").filter(secret_hash=hashed).first)
        if api_key is not None and len(kept) < MAX_KEYS_KEPT:
            kept[hashed] = api_key
    if api_key is None or not hmac.compare_digest(api_key.secret_hash, hashed):
        raise KeyRejected("Unknown API key.", code="unknown_key")
    now = timezone.now()
    if api_key.revoked_at is not None or api_key.organization.deletion_requested_at is not None:
        raise KeyRejected("This API key was revoked.", code="key_revoked")
    if api_key.expires_at is not None and api_key.expires_at <= now:
        raise KeyRejected("This API key has expired.", code="key_expired")
    stale = api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_PRECISION
    if stale or api_key.last_used_ip != ip:
        on_loop.blocking(ApiKey.all_orgs.filter(pk=api_key.pk).update, last_used_at=now, last_used_ip=ip)
        api_key.last_used_at, api_key.last_used_ip = now, ip  # on the kept copy too: no update next minute
    # The kept objects are shared between requests: each request gets its own.
    own = copy.copy(api_key)
    own.organization = copy.copy(api_key.organization)
    return own


# --- Sign-in events ----------------------------------------------------------------------------------------


def sign_in_record(*, user: User, action: str, origin: Origin | None = None) -> None:
    """Sign-ins (and failed attempts on a real account) are audited in every org the user belongs to."""
    for membership in Membership.all_orgs.filter(user=user).select_related("organization"):
        audit_record(org=membership.organization, action=action, user=user, target=user, origin=origin)


# --- The demo login of `make run` --------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoLogin:
    email: str
    password: str | None  # None when the demo user already existed: its password was printed back then
    org_slug: str


DEMO_EMAIL = "demo@crewdesk.local"
DEMO_ORG_SLUG = "demo"


@transaction.atomic
def demo_bootstrap() -> DemoLogin:
    """The demo user and org of `make run`; idempotent, and the password is only ever shown on creation."""
    user = User.objects.filter(email=DEMO_EMAIL).first()
    password = None
    if user is None:
        password = secrets.token_urlsafe(12)
        user = user_create(email=DEMO_EMAIL, password=password)
        email_mark_verified(user)
    if not Organization.objects.filter(slug=DEMO_ORG_SLUG).exists():
        organization_create(name="Demo team", owner=user, slug=DEMO_ORG_SLUG)
    return DemoLogin(email=DEMO_EMAIL, password=password, org_slug=DEMO_ORG_SLUG)


# --- Notifications -----------------------------------------------------------------------------------------


def notify_members(
    *, org: Organization, title: str, url: str = "", roles: list[str] | None = None, email: str = ""
) -> list[Notification]:
    """A notification for every member of the org (or those with one of `roles`), shown in the app and pushed
    to their open tabs; with `email`, also sent to them by email with that text."""
    memberships = Membership.objects.for_org(org)
    if roles is not None:
        memberships = memberships.filter(role__in=roles)
    members = list(memberships.values_list("user_id", flat=True))
    if email:
        addresses = list(User.objects.filter(pk__in=members).values_list("email", flat=True))
        transaction.on_commit(lambda: send_mail(title, email, None, addresses, fail_silently=True))
    created = Notification.objects.for_org(org).bulk_create(
        [Notification(organization=org, user_id=user_id, title=title[:200], url=url[:300]) for user_id in members]
    )
    transaction.on_commit(lambda: events.push_to_org(org.pk, "notification", {"message": title, "url": url}))
    return created


# --- Onboarding ---------------------------------------------------------------------------------------------


def onboarding_dismiss(*, membership: Membership, dismissed: bool = True) -> None:
    """Hide (or show again) the Overview's getting-started checklist, for this member in this org only."""
    membership.onboarding_dismissed_at = timezone.now() if dismissed else None
    membership.save(update_fields=["onboarding_dismissed_at", "updated_at"])
