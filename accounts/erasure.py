"""Erasure (GDPR Art. 17): a person's account (after re-authenticating) or a whole org, across every store that
registered with saas/core/privacy.py. Access ends at once (sessions, keys, the org itself); a background job then
erases store by store in batches. Each batch commits with the count it adds to the `ErasureRecord`, so a job
killed anywhere is rerun (by the beat, or by hand) and ends in the same state; the record keeps counts per store
and ids, never content."""

import hashlib
import hmac
import logging
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.sessions.models import Session
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from accounts import selectors
from accounts.exports import export_file_delete, exports_expire_now, orgs_with_traces
from accounts.models import (
    ApiKey,
    DataExport,
    ErasureRecord,
    MemberContent,
    Membership,
    Organization,
    User,
)
from accounts.permissions import OWNER, Principal
from accounts.services import Origin, audit_record, key_memo
from saas.core import events
from saas.core.errors import ApplicationError, Conflict, PermissionDenied
from saas.core.privacy import Subject, erasure_order
from saas.core.ratelimit import Bucket, counters_forget, enforce_rate_limits
from saas.core.redis import get_redis
from saas.core.tasks import send_task_on_commit
from saas.core.tenancy import org_scope

logger = logging.getLogger(__name__)

ERASURE_BATCH = 200


def _access_changed_on_commit(*, user_id: Any = None, org_id: Any = None) -> None:
    """Their open websockets re-check their rights once this commits (saas/core/consumers.py), and close."""
    transaction.on_commit(lambda: events.access_changed(user_id=user_id, org_id=org_id), robust=True)


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
            for org in orgs_with_traces(user)]  # fmt: skip


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
    send_task_on_commit("accounts.run_erasure", str(record.pk))
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
    notice = {"message": f"{org.name} was deleted.", "org": org.slug}
    transaction.on_commit(partial(events.push_to_org, org.pk, "org_deleted", notice))
    _access_changed_on_commit(org_id=org.pk)  # every member's open sockets of the org close, their tabs leave it
    send_task_on_commit("accounts.run_erasure", str(record.pk))
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
                export_file_delete(export)
            deleted = User.objects.filter(pk=user.pk).delete()[1]
            _finish(record, {"account": sum(deleted.values())})
    else:
        with transaction.atomic():
            _finish(record, {})


def _erase_org(record: ErasureRecord, batch_size: int) -> None:
    org_id = record.subject_id
    if Organization.objects.filter(pk=org_id).exists():
        # Members' personal exports hold a folder of this org: they expire now (the members can ask again).
        _batches(record, "personal exports", lambda: exports_expire_now(DataExport.objects.filter(
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
                export_file_delete(export)
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
        send_task_on_commit("accounts.run_erasure", record_id)
    return ids
