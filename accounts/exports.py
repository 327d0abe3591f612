"""Data exports (GDPR Art. 15 and 20): a person's data across their orgs, or an owner's whole org, built in the
background into a zip of JSON files and the original uploads, from every store that registered with
saas/core/privacy.py. Only the person who asked may download it, until it expires."""

import json
import logging
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.core.files import File
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts import selectors
from accounts.models import (
    AuditEvent,
    DataExport,
    Membership,
    Notification,
    Organization,
    User,
)
from accounts.permissions import OWNER, Principal
from accounts.services import Origin, audit_record
from saas.core import events, storage
from saas.core.errors import ApplicationError, Conflict, NotFound, PermissionDenied
from saas.core.privacy import ExportSink, stores
from saas.core.tasks import send_task_on_commit
from saas.core.tenancy import org_scope

logger = logging.getLogger(__name__)


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
    for org in orgs_with_traces(user):
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
    send_task_on_commit("accounts.build_export", str(export.pk))
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
    send_task_on_commit("accounts.build_export", str(export.pk))
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


def orgs_with_traces(user: User) -> list[Organization]:
    """The orgs they are in, then those they left that still hold something of theirs (their audit trail says
    which: joining, signing in, acting all leave an event)."""
    current = [m.organization for m in selectors.membership_list_for_user(user=user)]
    traces = AuditEvent.all_orgs.filter(Q(actor_user=user) | Q(target_type="accounts.user", target_id=str(user.pk)))
    former = Organization.objects.filter(pk__in=traces.values("organization_id"), deletion_requested_at__isnull=True)
    return current + list(former.exclude(pk__in=[org.pk for org in current]).order_by("created_at"))


def _write_personal(sink: ExportSink, user: User) -> None:
    sink.json("profile.json", _profile_json(user))
    for org in orgs_with_traces(user):
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
            transaction.on_commit(partial(events.push_to_org, org.pk, "notification", {"message": title, "url": url}))
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
    return exports_expire_now(DataExport.objects.filter(status=DataExport.Status.READY, expires_at__lte=now))


def exports_expire_now(exports: Any) -> int:
    expired = 0
    for export in exports.iterator():
        export_file_delete(export)
        DataExport.objects.filter(pk=export.pk).update(status=DataExport.Status.EXPIRED, file="",
                                                      updated_at=timezone.now())  # fmt: skip
        expired += 1
    return expired


def export_file_delete(export: DataExport) -> None:
    if export.file.name:
        export.file.storage.delete(export.file.name)
