"""The accounts app's own store for exports and erasure (accounts/exports.py, accounts/erasure.py): people,
teams, memberships, invitations, keys, notifications and the audit log, registered with saas/core/privacy.py."""

import re
from typing import Any

from django.conf import settings
from django.db.models import Q, TextField
from django.db.models.functions import Cast

from accounts.models import (
    ApiKey,
    AuditEvent,
    Invitation,
    Membership,
    Notification,
    Organization,
    User,
)
from saas.core.privacy import ExportSink, Store, Subject, register_store


def _scrub(value: Any, pattern: re.Pattern[str], replacement: str) -> Any:
    if isinstance(value, str):
        return pattern.sub(replacement, value)
    if isinstance(value, list):
        return [_scrub(item, pattern, replacement) for item in value]
    if isinstance(value, dict):
        return {_scrub(k, pattern, replacement): _scrub(v, pattern, replacement) for k, v in value.items()}
    return value


def _texts_pattern(texts: tuple[str, ...]) -> tuple[re.Pattern[str], str]:
    """Rows are found by whole words (PostgreSQL's \\m and \\M), then every occurrence in them is replaced,
    so a row found is never found again."""
    alternatives = "|".join(re.escape(text) for text in texts)
    return re.compile(alternatives, re.IGNORECASE), rf"\m(?:{alternatives})\M"


def _audit_json(event: AuditEvent, user_id: Any) -> dict[str, Any]:
    """About the person only: someone else who acted, or whom they acted on, is not named."""
    mine = event.actor_user_id == user_id
    about_me = event.target_type == "accounts.user" and event.target_id == str(user_id)
    return {
        "at": event.created_at.isoformat(), "action": event.action, "by": "you" if mine else "another member",
        "target": "you" if about_me else event.target_type, "ip": event.ip if mine else None,
        "user_agent": event.user_agent if mine else "",
    }  # fmt: skip


def accounts_export_user(*, sink: ExportSink, user_id: Any, org_id: Any, folder: str) -> None:
    about = Q(actor_user_id=user_id) | Q(target_type="accounts.user", target_id=str(user_id))
    events_about = AuditEvent.objects.for_org(org_id).filter(about).order_by("created_at")
    sink.json(f"{folder}/audit_events.json", [_audit_json(e, user_id) for e in events_about.iterator()])
    notifications = Notification.objects.for_org(org_id).filter(user_id=user_id).order_by("created_at")
    sink.json(f"{folder}/notifications.json", [
        {"at": n.created_at.isoformat(), "title": n.title, "url": n.url, "read": n.read_at is not None}
        for n in notifications
    ])  # fmt: skip
    keys = ApiKey.objects.for_org(org_id).filter(created_by_id=user_id).order_by("created_at")
    sink.json(f"{folder}/api_keys_created.json", [
        {"name": k.name, "prefix": k.prefix, "scopes": k.scopes, "status": k.status,
         "created_at": k.created_at.isoformat()} for k in keys
    ])  # fmt: skip


def accounts_export_org(*, sink: ExportSink, org_id: Any, folder: str) -> None:
    org = Organization.objects.get(pk=org_id)
    sink.json(f"{folder}/org.json", {
        "name": org.name, "slug": org.slug, "created_at": org.created_at.isoformat(),
        "retention_days": {"conversations": org.retain_conversations_days,
                           "ledger_content": org.retain_ledger_content_days, "exports": org.retain_exports_days},
        "member_content_on_erasure": org.member_content_on_erasure,
        "members": [{"email": m.user.email, "name": m.user.get_full_name(), "role": m.role,
                     "since": m.created_at.isoformat()}
                    for m in Membership.objects.for_org(org).select_related("user").order_by("created_at")],
        "invitations": [{"email": i.email, "role": i.role, "status": i.status, "created_at": i.created_at.isoformat()}
                        for i in Invitation.objects.for_org(org).order_by("created_at")],
        "api_keys": [{"name": k.name, "prefix": k.prefix, "scopes": k.scopes, "status": k.status,
                      "created_at": k.created_at.isoformat()} for k in ApiKey.objects.for_org(org)],
    })  # fmt: skip
    sink.json(f"{folder}/audit_events.json", [
        {"at": e.created_at.isoformat(), "action": e.action, "actor": e.actor_label, "target_type": e.target_type,
         "target_id": e.target_id, "target": e.target_label, "ip": e.ip, "metadata": e.metadata}
        for e in AuditEvent.objects.for_org(org).order_by("created_at").iterator()
    ])  # fmt: skip


def accounts_erase_user(*, subject: Subject, batch_size: int) -> int:
    """Their invitations and notifications go; audit events stay, pseudonymised."""
    org_id, user_id = subject.org_id, subject.user_id
    user = User.objects.get(pk=user_id)
    invitations = Invitation.objects.for_org(org_id).filter(email__iexact=user.email)
    erased = invitations.filter(pk__in=list(invitations.values_list("pk", flat=True)[:batch_size])).delete()[0]
    if erased:
        return erased
    notifications = Notification.objects.for_org(org_id).filter(user_id=user_id)
    erased = notifications.filter(pk__in=list(notifications.values_list("pk", flat=True)[:batch_size])).delete()[0]
    if erased:
        return erased
    pattern, sql_pattern = _texts_pattern(subject.texts)
    keys = list(ApiKey.objects.for_org(org_id).filter(created_by_id=user_id)[:batch_size])
    for key in keys:  # revoked when the erasure was asked for; their name may be the person's ("Ann's laptop")
        ApiKey.objects.for_org(org_id).filter(pk=key.pk).update(
            created_by=None, name=pattern.sub(subject.pseudonym, key.name)
        )
    if keys:
        return len(keys)
    named = (
        AuditEvent.objects.for_org(org_id)
        .annotate(metadata_text=Cast("metadata", TextField()))
        .filter(Q(actor_user_id=user_id) | Q(actor_label__iregex=sql_pattern) | Q(target_label__iregex=sql_pattern)
                | Q(metadata_text__iregex=sql_pattern)
                | (Q(target_type="accounts.user", target_id=str(user_id)) & ~Q(target_label=subject.pseudonym)))
    )  # fmt: skip
    batch = list(named[:batch_size])
    for event in batch:
        mine = event.actor_user_id == user_id
        about_me = event.target_type == "accounts.user" and event.target_id == str(user_id)
        AuditEvent.objects.for_org(org_id).filter(pk=event.pk).update(
            actor_user=None if mine else event.actor_user_id,
            actor_label=subject.pseudonym if mine else pattern.sub(subject.pseudonym, event.actor_label),
            target_label=_target_label(event, subject, pattern, mine=mine, about_me=about_me),
            ip=None if mine or about_me else event.ip,
            user_agent="" if mine or about_me else event.user_agent,
            metadata=_scrub(event.metadata, pattern, subject.pseudonym),
        )  # fmt: skip
    return len(batch)


def _target_label(event: AuditEvent, subject: Subject, pattern: re.Pattern[str], *, mine: bool, about_me: bool) -> str:
    if about_me:
        return subject.pseudonym
    if mine and not subject.transfer_content:
        return ""  # what they acted on (a crew, a document) is deleted with them: its name goes too
    return pattern.sub(subject.pseudonym, event.target_label)


def accounts_erase_org(*, org_id: Any, batch_size: int) -> int:
    for model in (Invitation, Notification, AuditEvent, ApiKey, Membership):
        batch = list(model.objects.for_org(org_id).values_list("pk", flat=True)[:batch_size])
        if batch:
            if model is ApiKey:  # rotated keys point at each other
                ApiKey.objects.for_org(org_id).filter(pk__in=batch).update(replaced_by=None)
            return int(model.objects.for_org(org_id).filter(pk__in=batch).delete()[0])
    return 0


STORE = Store(
    name="accounts",
    title="Accounts, teams and the audit log",
    what="Your email address, name and password hash; your teams and roles; invitations; API keys (only a hash "
    "of the secret); notifications; the audit log of who did what, with IP address and browser",
    where="PostgreSQL; sessions in PostgreSQL and Redis",
    kept=lambda: (
        f"For as long as the account or team exists; sessions {settings.SESSION_COOKIE_AGE // 86400} days; "
        f"data exports {settings.DATA_EXPORT_KEEP_DAYS} days (less when a team's export retention says so). "
        "Audit events stay when a member erases their account, without their name, email or IP address"
    ),
    export_user=accounts_export_user,
    export_org=accounts_export_org,
    erase_user=accounts_erase_user,
    erase_org=accounts_erase_org,
)


def register() -> None:
    register_store(STORE)
