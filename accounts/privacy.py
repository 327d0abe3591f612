"""Exports and erasure (GDPR Art. 15, 17 and 20), across every store that registered with saas/core/privacy.py.

- Exports: a person's data across their orgs, or an owner's whole org, built in the background into a zip of
  JSON files and the original uploads. Only the person who asked may download it, until it expires.
- Erasure: a person's account (after re-authenticating) or a whole org. Access ends at once (sessions, keys,
  the org itself); a background job then erases store by store in batches. Each batch commits with the count it
  adds to the `ErasureRecord`, so a job killed anywhere is rerun (by the beat, or by hand) and ends in the same
  state; the record keeps counts per store and ids, never content.
"""

import hashlib
import hmac
import json
import logging
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.sessions.models import Session
from django.core.files import File
from django.core.mail import send_mail
from django.db import connection, transaction
from django.db.models import F, Q, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from accounts import selectors
from accounts.models import (
    ApiKey,
    AuditEvent,
    DataExport,
    ErasureRecord,
    Invitation,
    MemberContent,
    Membership,
    Notification,
    Organization,
    User,
)
from accounts.permissions import OWNER, Principal
from accounts.services import Origin, audit_record, key_memo
from saas.core import events, storage
from saas.core.errors import ApplicationError, Conflict, NotFound, PermissionDenied
from saas.core.privacy import ExportSink, Store, Subject, erasure_order, register_store, stores
from saas.core.ratelimit import Bucket, counters_forget, enforce_rate_limits
from saas.core.redis import get_redis
from saas.core.tenancy import org_scope

logger = logging.getLogger(__name__)

ERASURE_BATCH = 200


def _push_on_commit(org_id: Any, event_type: str, data: dict[str, Any]) -> None:
    transaction.on_commit(lambda: events.push_to_org(org_id, event_type, data))


def _access_changed_on_commit(*, user_id: Any = None, org_id: Any = None) -> None:
    """Their open websockets re-check their rights once this commits (saas/core/consumers.py), and close."""
    transaction.on_commit(lambda: events.access_changed(user_id=user_id, org_id=org_id), robust=True)


def _on_commit_task(name: str, *args: Any) -> None:
    from saas.celery import app  # the task's owner is this app; sending by name keeps the layers apart

    transaction.on_commit(lambda: app.send_task(name, args=list(args)))


# --- Exports -----------------------------------------------------------------------------------------------


class _ZipSink(ExportSink):
    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.archive = archive

    def json(self, path: str, data: Any) -> None:
        self.archive.writestr(path, json.dumps(data, indent=2, ensure_ascii=False, default=str))

    def file(self, path: str, open_file: Callable[[], Any]) -> None:
        """A stored file, decrypted as it is copied in. One that is missing or unreadable does not sink the
        whole export: a note in its place says so (an unreachable store does: the task retries)."""
        try:
            source = open_file()
        except (storage.StoredFileMissing, storage.StoredFileCorrupt) as error:
            self.archive.writestr(f"{path}.unavailable.txt", f"This file could not be read from the file storage "
                                  f"({error.code}): {error.message}\n")  # fmt: skip
            return
        with source, self.archive.open(path, "w", force_zip64=True) as target:
            shutil.copyfileobj(source, target, 1024 * 1024)


def _keep_days(org: Organization | None) -> int:
    if org is not None and org.retain_exports_days:
        return min(org.retain_exports_days, settings.DATA_EXPORT_KEEP_DAYS)
    return settings.DATA_EXPORT_KEEP_DAYS


def _audit_everywhere(user: User, action: str, export: DataExport, origin: Origin | None) -> None:
    """A personal export holds data of each org that has something of theirs: each org's log shows it."""
    for org in _orgs_with_traces(user):
        audit_record(org=org, action=action, user=user, target=export,
                     target_label="personal data export", origin=origin)  # fmt: skip


OPEN_EXPORTS = (DataExport.Status.QUEUED, DataExport.Status.BUILDING)
EXPORT_BUILD_STALE_AFTER = 1800 + 60  # accounts.build_export's hard time limit, and a minute


@transaction.atomic
def export_request(*, user: User, origin: Origin | None = None) -> DataExport:
    """A personal export; one at a time per person (asking again while one is built returns that one)."""
    User.objects.select_for_update().filter(pk=user.pk).first()
    existing = DataExport.objects.filter(user=user, kind=DataExport.Kind.PERSONAL, status__in=OPEN_EXPORTS).first()
    if existing is not None:
        return existing
    export = DataExport.objects.create(user=user, kind=DataExport.Kind.PERSONAL)
    _audit_everywhere(user, "user.export_requested", export, origin)
    _on_commit_task("accounts.build_export", str(export.pk))
    return export


@transaction.atomic
def organization_export_request(*, principal: Principal, origin: Origin | None = None) -> DataExport:
    """Everything of the org, for an owner leaving the service (or keeping a copy)."""
    principal.require(OWNER)
    if principal.user is None:
        raise PermissionDenied("An org export is asked for by an owner, signed in.", code="user_required")
    org = Organization.objects.select_for_update().get(pk=principal.organization.pk)
    existing = DataExport.objects.filter(organization=org, status__in=OPEN_EXPORTS).first()
    if existing is not None:
        return existing
    export = DataExport.objects.create(user=principal.user, organization=org, kind=DataExport.Kind.ORGANIZATION)
    audit_record(org=org, action="org.export_requested", principal=principal, target=export,
                 target_label="team data export", origin=origin)  # fmt: skip
    _on_commit_task("accounts.build_export", str(export.pk))
    return export


def _profile_json(user: User) -> dict[str, Any]:
    from allauth.account.models import EmailAddress
    from allauth.mfa.models import Authenticator

    return {
        "email": user.email, "first_name": user.first_name, "last_name": user.last_name,
        "date_joined": user.date_joined.isoformat(),
        "last_login": user.last_login.isoformat() if user.last_login else None,
        "email_addresses": [{"email": e.email, "verified": e.verified, "primary": e.primary}
                            for e in EmailAddress.objects.filter(user=user)],
        "two_factor": sorted(Authenticator.objects.filter(user=user).values_list("type", flat=True)),
        "memberships": [{"org": m.organization.name, "slug": m.organization.slug, "role": m.role,
                         "since": m.created_at.isoformat()} for m in selectors.membership_list_for_user(user=user)],
    }  # fmt: skip


def _orgs_with_traces(user: User) -> list[Organization]:
    """The orgs they are in, then those they left that still hold something of theirs (their audit trail says
    which: joining, signing in, acting all leave an event)."""
    current = [m.organization for m in selectors.membership_list_for_user(user=user)]
    traces = AuditEvent.all_orgs.filter(Q(actor_user=user) | Q(target_type="accounts.user", target_id=str(user.pk)))
    former = Organization.objects.filter(pk__in=traces.values("organization_id"), deletion_requested_at__isnull=True)
    return current + list(former.exclude(pk__in=[org.pk for org in current]).order_by("created_at"))


def _write_personal(sink: ExportSink, user: User) -> None:
    sink.json("profile.json", _profile_json(user))
    for org in _orgs_with_traces(user):
        with org_scope(org):
            for store in stores():
                if store.export_user is not None:
                    store.export_user(sink=sink, user_id=user.pk, org_id=org.pk, folder=f"orgs/{org.slug}")


def _write_org(sink: ExportSink, org: Organization) -> None:
    with org_scope(org):
        for store in stores():
            if store.export_org is not None:
                store.export_org(sink=sink, org_id=org.pk, folder=f"org-{org.slug}")


def export_build(*, export_id: Any) -> DataExport | None:
    """The task's work: idempotent (an export already built or failed is left as it is)."""
    with transaction.atomic():
        # A build still running elsewhere (a redelivered task) is left to it: two builds would write two files.
        # One that has not moved for longer than the task's hard limit lost its worker and is taken over.
        lost = timezone.now() - timedelta(seconds=EXPORT_BUILD_STALE_AFTER)
        claimable = Q(status=DataExport.Status.QUEUED) | Q(status=DataExport.Status.BUILDING, updated_at__lt=lost)
        export = DataExport.objects.select_for_update(of=("self",)).select_related("user", "organization").filter(
            claimable, pk=export_id).first()  # fmt: skip
        if export is None:
            return None
        export.status = DataExport.Status.BUILDING
        export.save(update_fields=["status", "updated_at"])
    try:
        with tempfile.TemporaryFile() as spool:
            with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                sink = _ZipSink(archive)
                sink.json("README.json", {
                    "what": "Crewdesk data export", "kind": export.kind, "created_at": timezone.now().isoformat(),
                    "format": "JSON files (UTF-8) and the original uploaded files, folder by org",
                })  # fmt: skip
                if export.kind == DataExport.Kind.PERSONAL:
                    _write_personal(sink, export.user)
                else:
                    assert export.organization is not None  # an org export names its org
                    _write_org(sink, export.organization)
            spool.seek(0)
            export.file.save(f"{export.pk}.zip", File(spool), save=False)
            export.size_bytes = export.file.size
    except Exception as error:
        logger.exception("Export %s failed", export.pk)
        DataExport.objects.filter(pk=export.pk).update(status=DataExport.Status.FAILED, error=str(error)[:500],
                                                      finished_at=timezone.now())  # fmt: skip
        raise
    now = timezone.now()
    export.status, export.finished_at = DataExport.Status.READY, now
    export.expires_at = now + timedelta(days=_keep_days(export.organization))
    export.save(update_fields=["status", "file", "size_bytes", "finished_at", "expires_at", "updated_at"])
    _notify_ready(export)
    return export


def _notify_ready(export: DataExport) -> None:
    if export.organization is None:
        title, url = "Your data export is ready", "/account/privacy/"
        orgs = [m.organization for m in selectors.membership_list_for_user(user=export.user)]
    else:
        title, url = "The team's data export is ready", f"/o/{export.organization.slug}/settings/"
        orgs = [export.organization]
    with transaction.atomic():
        for org in orgs:
            Notification.all_orgs.create(organization=org, user=export.user, title=title, url=url)
            _push_on_commit(org.pk, "notification", {"message": title, "url": url})
    expires = export.expires_at.strftime("%d %B %Y") if export.expires_at else ""
    send_mail(
        f"{settings.ACCOUNT_EMAIL_SUBJECT_PREFIX}{title}",
        f"{title}. Download it, signed in as {export.user.email}, from {settings.SITE_URL}{url}\n\n"
        f"The link works only for you and expires on {expires}.",
        None, [export.user.email], fail_silently=True,
    )  # fmt: skip


def export_get(*, user: User, export_id: Any) -> DataExport:
    """Only the person who asked ever sees an export; anyone else gets a 404."""
    export = DataExport.objects.filter(pk=export_id, user=user).select_related("organization").first()
    if export is None:
        raise NotFound("No such export.")
    return export


def export_list(*, user: User) -> list[DataExport]:
    return list(DataExport.objects.filter(user=user).select_related("organization").order_by("-created_at")[:20])


def org_export_list(*, principal: Principal) -> list[DataExport]:
    """The org's recent exports, for its owners' settings page (each downloads only its own)."""
    principal.require(OWNER)
    exports = DataExport.objects.filter(organization=principal.organization).select_related("user")
    return list(exports.order_by("-created_at")[:10])


def export_download(*, user: User, export_id: Any, origin: Origin | None = None) -> DataExport:
    """Checks and audits a download; the caller streams `export.file`."""
    with transaction.atomic():
        export = export_get(user=user, export_id=export_id)
        export = DataExport.objects.select_for_update().get(pk=export.pk)
        if export.status == DataExport.Status.EXPIRED or (export.expires_at and export.expires_at <= timezone.now()):
            raise ApplicationError("This export has expired: ask for a new one.", code="export_expired", status=410)
        if export.status != DataExport.Status.READY:
            raise Conflict(f"This export is not ready yet ({export.get_status_display().lower()}).",
                           code="export_not_ready")  # fmt: skip
        org = export.organization
        if org is not None:
            membership = Membership.all_orgs.filter(organization=org, user=user, role=Membership.Role.OWNER).first()
            if membership is None or org.deletion_requested_at:
                raise NotFound("No such export.")  # an owner who stepped down no longer reads the org's data
            audit_record(org=org, action="org.export_downloaded", user=user, target=export,
                         target_label="team data export", origin=origin)  # fmt: skip
        else:
            _audit_everywhere(user, "user.export_downloaded", export, origin)
        DataExport.objects.filter(pk=export.pk).update(download_count=F("download_count") + 1)
    return export


def exports_expire(*, now: datetime | None = None) -> int:
    """Beat: expired exports lose their file (the row stays, saying it expired)."""
    now = now or timezone.now()
    return _expire_exports(DataExport.objects.filter(status=DataExport.Status.READY, expires_at__lte=now))


def _expire_exports(exports: Any) -> int:
    expired = 0
    for export in exports.iterator():
        _delete_export_file(export)
        DataExport.objects.filter(pk=export.pk).update(status=DataExport.Status.EXPIRED, file="",
                                                      updated_at=timezone.now())  # fmt: skip
        expired += 1
    return expired


def _delete_export_file(export: DataExport) -> None:
    if export.file.name:
        export.file.storage.delete(export.file.name)


# --- Erasure: asking -----------------------------------------------------------------------------------------


def pseudonym(user_id: Any) -> str:
    """Stable for one person (their rows stay linkable for security) but not theirs to read back: an HMAC."""
    digest = hmac.new(settings.SECRET_KEY.encode(), f"erased-user:{user_id}".encode(), hashlib.sha256).hexdigest()
    return f"erased-user-{digest[:12]}"


def erasure_preview(*, user: User) -> list[dict[str, Any]]:
    """What the person is shown before confirming: per org, their role, what happens to what they made, and
    whether they must first hand the org on (sole owner)."""
    preview = []
    for membership in selectors.membership_list_for_user(user=user):
        org = membership.organization
        sole_owner = membership.role == Membership.Role.OWNER and not Membership.all_orgs.filter(organization=org,
            role=Membership.Role.OWNER).exclude(user=user).exists()  # fmt: skip
        preview.append({
            "org": org, "role": membership.get_role_display(), "sole_owner": sole_owner,
            "transfer": org.member_content_on_erasure == MemberContent.TRANSFER,
            "policy": org.get_member_content_on_erasure_display(),
        })  # fmt: skip
    return preview


def _erasure_plan(user: User) -> list[dict[str, Any]]:
    """Every org holding something of theirs, each with its own policy for their content."""
    return [{"org": str(org.pk), "transfer": org.member_content_on_erasure == MemberContent.TRANSFER}
            for org in _orgs_with_traces(user)]  # fmt: skip


def _revoke_sessions(user_id: Any) -> int:
    from django.contrib.sessions.backends.cached_db import SessionStore

    revoked = 0
    for session in Session.objects.iterator():  # expired ones too: they still name the user
        if str(session.get_decoded().get("_auth_user_id")) == str(user_id):
            SessionStore(session_key=session.session_key).delete()  # the database row and its cached copy
            revoked += 1
    return revoked


def _check_password(user: User, password: str, what: str) -> None:
    """Re-authentication before erasing, limited like sign-in is (a stolen session must not guess passwords)."""
    enforce_rate_limits(None, [Bucket("auth:reauthenticate", str(user.pk), settings.RATE_LIMITS["auth_ip"])])
    if not password or not user.check_password(password):
        raise PermissionDenied(f"Your password is needed to {what}, and this one is not it.",
                               code="reauthentication_failed")  # fmt: skip


@transaction.atomic
def account_erase_request(*, user: User, password: str, origin: Origin | None = None) -> ErasureRecord:
    """The person is signed out everywhere and their keys stop at once; the job erases the rest."""
    _check_password(user, password, "delete your account")
    user = User.objects.select_for_update().get(pk=user.pk)
    preview = erasure_preview(user=user)
    sole = [row["org"].name for row in preview if row["sole_owner"]]
    if sole:
        raise Conflict(
            f"You are the only owner of {', '.join(sole)}: transfer ownership or delete the team first.",
            code="sole_owner",
            details={"orgs": [row["org"].slug for row in preview if row["sole_owner"]]},
        )
    for row in preview:
        audit_record(org=row["org"], action="user.erasure_requested", user=user, target=user,
                     target_label=pseudonym(user.pk), origin=origin)  # fmt: skip
    record = ErasureRecord.objects.create(kind=ErasureRecord.Kind.USER, subject_id=str(user.pk),
                                          plan=_erasure_plan(user))  # fmt: skip
    user.is_active = False
    user.set_unusable_password()
    user.save(update_fields=["is_active", "password"])
    now = timezone.now()
    ApiKey.all_orgs.filter(created_by=user, revoked_at__isnull=True).update(revoked_at=now, updated_at=now)
    key_memo.changed()
    transaction.on_commit(lambda: _revoke_sessions(user.pk))
    _access_changed_on_commit(user_id=user.pk)
    _on_commit_task("accounts.run_erasure", str(record.pk))
    return record


@transaction.atomic
def organization_erase_request(
    *, principal: Principal, confirm: str, password: str, origin: Origin | None = None
) -> ErasureRecord:
    """An owner deletes the org: gone for everyone at once, erased store by store by the job."""
    principal.require(OWNER)
    user = principal.user
    if user is None:
        raise PermissionDenied("A team is deleted by an owner, signed in.", code="user_required")
    org = Organization.objects.select_for_update().get(pk=principal.organization.pk)
    if confirm.strip() != org.slug:
        raise ApplicationError(f"Type the team's short name, {org.slug}, to confirm.", code="invalid",
                               details={"fields": {"confirm": [f"Type {org.slug} to confirm."]}})  # fmt: skip
    _check_password(user, password, "delete the team")
    if org.deletion_requested_at is None:
        org.deletion_requested_at = timezone.now()
        org.save(update_fields=["deletion_requested_at", "updated_at"])
    record = ErasureRecord.objects.filter(kind=ErasureRecord.Kind.ORGANIZATION, subject_id=str(org.pk)).first()
    if record is None:
        record = ErasureRecord.objects.create(kind=ErasureRecord.Kind.ORGANIZATION, subject_id=str(org.pk),
                                              plan=[{"org": str(org.pk)}])  # fmt: skip
    now = timezone.now()
    ApiKey.objects.for_org(org).filter(revoked_at__isnull=True).update(revoked_at=now, updated_at=now)
    key_memo.changed()
    _push_on_commit(org.pk, "org_deleted", {"message": f"{org.name} was deleted.", "org": org.slug})
    _access_changed_on_commit(org_id=org.pk)  # every member's open sockets of the org close, their tabs leave it
    _on_commit_task("accounts.run_erasure", str(record.pk))
    return record


# --- Erasure: the job --------------------------------------------------------------------------------------


def _maintenance() -> None:
    """Audit events are append-only; erasure is the one writer allowed to change them (migration 0003)."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL crewdesk.audit_maintenance = 'on'")


def _batches(record: ErasureRecord, name: str, erase: Callable[[], int]) -> None:
    """Erase until a batch finds nothing; each batch commits together with the count it adds."""
    while True:
        with transaction.atomic():
            _maintenance()
            erased = erase()
            if erased:
                locked = ErasureRecord.objects.select_for_update().get(pk=record.pk)
                locked.counts[name] = locked.counts.get(name, 0) + erased
                locked.save(update_fields=["counts", "updated_at"])
        get_redis().expire(_lease_key(record.pk), LEASE_SECONDS)  # still working: keep the lease
        if not erased:
            return


LEASE_SECONDS = 600


def _lease_key(record_id: Any) -> str:
    return f"crewdesk:erasure:{record_id}"


class _Lease:
    """One job per record at a time (a rerun while the first still works waits for the next beat)."""

    def __init__(self, record_id: Any) -> None:
        self.lock = get_redis().lock(_lease_key(record_id), timeout=LEASE_SECONDS, blocking=False)

    def __enter__(self) -> bool:
        return bool(self.lock.acquire())

    def __exit__(self, *exc: object) -> None:
        if self.lock.owned():
            self.lock.release()


def erasure_run(*, record_id: Any, batch_size: int = ERASURE_BATCH) -> ErasureRecord | None:
    """The task's work, idempotent and resumable: every step finds what is left by a query."""
    with _Lease(record_id) as leased:
        if not leased:
            return None
        record = ErasureRecord.objects.filter(pk=record_id).exclude(status=ErasureRecord.Status.DONE).first()
        if record is None:
            return None
        ErasureRecord.objects.filter(pk=record.pk).update(status=ErasureRecord.Status.RUNNING, runs=F("runs") + 1)
        if record.kind == ErasureRecord.Kind.USER:
            _erase_user(record, batch_size)
        else:
            _erase_org(record, batch_size)
        record.refresh_from_db()
        logger.info("Erasure %s (%s) done: %s", record.pk, record.kind, record.counts)
        return record


def _subject_texts(user: User) -> tuple[str, ...]:
    names = [user.get_full_name().strip(), user.first_name.strip(), user.last_name.strip()]
    return (user.email, *dict.fromkeys(n for n in names if len(n) >= 3))


def _erase_user(record: ErasureRecord, batch_size: int) -> None:
    user = User.objects.filter(pk=str(record.subject_id)).first()
    if user is not None:  # None: a run killed after the last step's commit; only the record is left to close
        texts = _subject_texts(user)
        for store in erasure_order():
            if store.erase_user is None:
                continue
            for step in record.plan:
                subject = Subject(user_id=user.pk, org_id=step["org"], pseudonym=pseudonym(user.pk), texts=texts,
                                  transfer_content=step["transfer"])  # fmt: skip
                with org_scope(step["org"]):
                    _batches(record, store.name, partial(store.erase_user, subject=subject, batch_size=batch_size))
        _batches(record, "sessions", lambda: _revoke_sessions(user.pk))
        _batches(record, "rate limit counters", lambda: counters_forget(str(user.pk)))
        with transaction.atomic():
            _maintenance()
            for export in DataExport.objects.filter(user=user):
                _delete_export_file(export)
            deleted = User.objects.filter(pk=user.pk).delete()[1]
            _finish(record, {"account": sum(deleted.values())})
    else:
        with transaction.atomic():
            _finish(record, {})


def _erase_org(record: ErasureRecord, batch_size: int) -> None:
    org_id = record.subject_id
    if Organization.objects.filter(pk=org_id).exists():
        # Members' personal exports hold a folder of this org: they expire now (the members can ask again).
        _batches(record, "personal exports", lambda: _expire_exports(DataExport.objects.filter(
            kind=DataExport.Kind.PERSONAL, status=DataExport.Status.READY,
            user__memberships__organization_id=org_id)))  # fmt: skip
        with org_scope(org_id):
            for store in erasure_order():
                if store.erase_org is not None:
                    _batches(record, store.name, partial(store.erase_org, org_id=org_id, batch_size=batch_size))
        _batches(record, "rate limit counters", lambda: counters_forget(str(org_id)))
        with transaction.atomic():
            _maintenance()
            for export in DataExport.objects.filter(organization_id=org_id):
                _delete_export_file(export)
            deleted = Organization.objects.filter(pk=org_id).delete()[1]
            _finish(record, {"org": sum(deleted.values())})
    else:
        with transaction.atomic():
            _finish(record, {})


def _finish(record: ErasureRecord, counts: dict[str, int]) -> None:
    locked = ErasureRecord.objects.select_for_update().get(pk=record.pk)
    for name, count in counts.items():
        locked.counts[name] = locked.counts.get(name, 0) + count
    locked.status, locked.finished_at = ErasureRecord.Status.DONE, timezone.now()
    locked.save(update_fields=["counts", "status", "finished_at", "updated_at"])


def erasures_resume(*, stale_after: timedelta = timedelta(minutes=10)) -> list[str]:
    """Beat: an erasure whose job died (no batch for a while) is started again."""
    stale = ErasureRecord.objects.exclude(status=ErasureRecord.Status.DONE).filter(
        updated_at__lt=timezone.now() - stale_after)  # fmt: skip
    ids = [str(pk) for pk in stale.values_list("pk", flat=True)]
    for record_id in ids:
        _on_commit_task("accounts.run_erasure", record_id)
    return ids


# --- Accounts' own store -------------------------------------------------------------------------------------


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
