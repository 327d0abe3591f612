from functools import partial
from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db import transaction
from django.http import HttpRequest

from accounts.models import (
    ApiKey,
    AuditEvent,
    DataExport,
    ErasureRecord,
    Invitation,
    Membership,
    Notification,
    Organization,
    User,
)
from saas.core import events
from saas.core.admin import LedgerAdmin, OrgOwnedAdmin


def _sockets_recheck(*user_ids: Any) -> None:
    """An operator's change to someone's rights reaches their open websockets too, like a member's change."""
    for user_id in set(user_ids):
        transaction.on_commit(partial(events.access_changed, user_id=user_id), robust=True)


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    ordering = ("email",)
    list_display = ("email", "is_staff", "is_active", "date_joined")
    search_fields = ("email",)
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change:
            _sockets_recheck(obj.pk)  # deactivated, or a new password: open sockets re-check their session


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "created_at")
    search_fields = ("name", "slug")


@admin.register(Membership)
class MembershipAdmin(OrgOwnedAdmin):
    list_display = ("user", "organization", "role", "created_at")
    list_filter = ("role",)
    search_fields = ("user__email", "organization__name", "organization__slug")
    raw_id_fields = ("user", "organization")

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        previous = Membership.all_orgs.filter(pk=obj.pk).values_list("user_id", flat=True).first() if change else None
        super().save_model(request, obj, form, change)
        _sockets_recheck(obj.user_id, *([previous] if previous else []))

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        super().delete_model(request, obj)
        _sockets_recheck(obj.user_id)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        user_ids = list(queryset.values_list("user_id", flat=True))
        super().delete_queryset(request, queryset)
        _sockets_recheck(*user_ids)


@admin.register(Invitation)
class InvitationAdmin(OrgOwnedAdmin):
    list_display = ("email", "organization", "role", "expires_at", "accepted_at", "revoked_at")
    search_fields = ("email", "organization__name")
    list_filter = ("role",)
    exclude = ("token_hash",)
    raw_id_fields = ("organization", "invited_by", "accepted_by")


@admin.register(ApiKey)
class ApiKeyAdmin(OrgOwnedAdmin):
    list_display = ("name", "prefix", "organization", "last_used_at", "revoked_at")
    search_fields = ("name", "prefix", "organization__name")
    readonly_fields = ("prefix", "last_used_at", "last_used_ip")
    exclude = ("secret_hash",)
    raw_id_fields = ("organization", "created_by")


@admin.register(AuditEvent)
class AuditEventAdmin(LedgerAdmin):
    """Read-only: the log is append-only (the database refuses changes too)."""

    list_display = ("created_at", "organization", "action", "actor_label", "target_label", "ip")
    list_filter = ("action",)
    search_fields = ("action", "actor_label", "target_label", "organization__name")
    date_hierarchy = "created_at"


@admin.register(Notification)
class NotificationAdmin(LedgerAdmin):
    list_display = ("created_at", "organization", "user", "title", "read_at")
    search_fields = ("title", "user__email")


@admin.register(ErasureRecord)
class ErasureRecordAdmin(admin.ModelAdmin):
    """What each erasure removed, store by store (counts only). Read-only: the job writes it."""

    list_display = ("created_at", "kind", "subject_id", "status", "runs", "finished_at")
    list_filter = ("kind", "status")
    readonly_fields = ("kind", "subject_id", "status", "plan", "counts", "runs", "finished_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(DataExport)
class DataExportAdmin(admin.ModelAdmin):
    """Who asked for which export and when; the file itself is only ever served to the person who asked."""

    list_display = ("created_at", "user", "kind", "organization", "status", "size_bytes", "expires_at")
    list_filter = ("kind", "status")
    exclude = ("file",)
    readonly_fields = ("user", "organization", "kind", "status", "size_bytes", "error", "finished_at",
                       "expires_at", "download_count")  # fmt: skip

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
