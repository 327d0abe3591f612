"""What every app's admin shares: the operator's site (our apps first, dj-stripe's mirror last) and one mixin for
org-owned models.

Operators see every org. An org-owned model's default manager refuses to query with no org in scope (that is what
keeps tenants apart), so the admin reads through the `all_orgs` escape hatch deliberately, here and only here; a
foreign key to another org-owned row is shown read-only (its form field would query the scoped manager).
"""

from typing import Any

from django.contrib import admin
from django.db import models
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from saas.core.tenancy import OrgOwnedModel

# Apps an operator rarely needs, shown after ours: dj-stripe mirrors Stripe (whose dashboard is the source of truth).
_LAST = ("djstripe",)


class CrewdeskAdminSite(admin.AdminSite):
    site_header = "Crewdesk operations"
    site_title = "Crewdesk admin"
    index_title = "Operations"

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
        apps = super().get_app_list(request, app_label)
        for app in apps:
            if app["app_label"] == "djstripe":
                app["name"] = "Stripe mirror (dj-stripe, read from Stripe)"
        return sorted(apps, key=lambda app: app["app_label"] in _LAST)  # stable: alphabetical within each group


def _is_org_owned(model: Any) -> bool:
    return isinstance(model, type) and issubclass(model, OrgOwnedModel)


class AllOrgsMixin:
    """Every read goes through `all_orgs`; links to other org-owned rows are read-only."""

    model: Any

    def get_queryset(self, request: HttpRequest) -> Any:
        queryset = self.model.all_orgs.all()
        if ordering := self.get_ordering(request):  # type: ignore[attr-defined]
            queryset = queryset.order_by(*ordering)
        return queryset

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # A form field for a foreign key to an org-owned model would build its choices from the scoped default
        # manager (Django reads `_default_manager` before any queryset we pass), and an operator has no business
        # moving a row to another org's key, run or document anyway: such links are shown, not edited.
        linked = tuple(
            f.name
            for f in self.model._meta.get_fields()
            if (f.many_to_one or f.one_to_one or f.many_to_many) and f.concrete and _is_org_owned(f.related_model)
        )
        own = tuple(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        return own + tuple(name for name in linked if name not in own)


class OrgOwnedAdmin(AllOrgsMixin, admin.ModelAdmin):
    """The one admin base for org-owned models."""


class LedgerAdmin(OrgOwnedAdmin):
    """Rows something else relies on (usage, the gateway's calls, audit, run steps): read-only for operators too.
    Every field is shown read-only except those excluded (ciphertext, hashes)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def plain_fields(model: type[models.Model], *also_hidden: str) -> tuple[str, ...]:
    """A model's fields minus ciphertext (`*_encrypted`), vectors and the names given: what an operator may see
    of a row on its detail page (shown read-only)."""
    hidden = set(also_hidden)
    return tuple(
        f.name
        for f in model._meta.get_fields()
        if getattr(f, "concrete", False)
        and not f.auto_created
        and not f.name.endswith("_encrypted")
        and f.name not in hidden
        and f.get_internal_type() != "VectorField"
    )


def rows_table(headers: tuple[str, ...], rows: Any) -> str:
    """A small read-only table of child rows for a detail page (a run's steps, a crew's agents). Inline formsets
    cannot be used for org-owned children: their primary-key field queries the scoped default manager."""
    if not rows:
        return "-"
    head = format_html_join("", "<th>{}</th>", ((h,) for h in headers))
    body = format_html_join(
        "", "<tr>{}</tr>", ((format_html_join("", "<td>{}</td>", ((c,) for c in row)),) for row in rows)
    )
    return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", head, body)
