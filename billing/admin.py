from contextlib import suppress

from django.contrib import admin
from django.contrib.admin.exceptions import NotRegistered
from djstripe import admin as djstripe_admin  # noqa: F401  (registers dj-stripe's admins, which are curated below)
from djstripe import models as djstripe_models

from billing.models import OrgBilling, Plan, UsageEvent, UsageReport
from saas.core.admin import LedgerAdmin, OrgOwnedAdmin


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "monthly_price_usd", "included_requests", "hard_cap", "price_per_extra_request",
                    "is_default")  # fmt: skip
    ordering = ("position",)


@admin.register(OrgBilling)
class OrgBillingAdmin(OrgOwnedAdmin):
    list_display = ("organization", "plan", "status", "spend_cap_usd", "current_period_end")
    list_filter = ("plan", "status")
    search_fields = ("organization__name", "organization__slug")
    raw_id_fields = ("organization",)
    list_select_related = ("organization", "plan")


@admin.register(UsageEvent)
class UsageEventAdmin(LedgerAdmin):
    """The usage ledger invoices are counted from: read-only."""

    list_display = ("created_at", "organization", "kind", "feature", "model", "cost_usd", "period_start")
    list_filter = ("kind", "feature")
    search_fields = ("organization__name", "organization__slug", "model")
    date_hierarchy = "created_at"
    list_select_related = ("organization",)


@admin.register(UsageReport)
class UsageReportAdmin(LedgerAdmin):
    """What Stripe's billing meter has counted per org and period, and the report in flight."""

    list_display = ("period_start", "organization", "reported_requests", "pending_requests", "last_reported_at")
    search_fields = ("organization__name", "organization__slug")


# dj-stripe registers an admin for each of the ~40 Stripe objects it mirrors; Stripe's dashboard is where they are
# managed. An operator keeps the few Crewdesk's billing reads (who pays, for what, and the webhooks that told us);
# the rest (and dj-stripe's API key page, which would show secret keys) leave the admin.
_STRIPE_KEPT = {
    djstripe_models.Customer,
    djstripe_models.Subscription,
    djstripe_models.Price,
    djstripe_models.Product,
    djstripe_models.WebhookEndpoint,
    djstripe_models.WebhookEventTrigger,
}


for _model in list(admin.site._registry):
    if _model._meta.app_label != "djstripe" or _model in _STRIPE_KEPT:
        continue
    with suppress(NotRegistered):  # another app's admin may have taken it out first
        admin.site.unregister(_model)
