from django.contrib import admin

from billing.models import OrgBilling, Plan


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "monthly_price_usd", "included_requests", "hard_cap", "price_per_extra_request",
                    "is_default")  # fmt: skip
    ordering = ("position",)


@admin.register(OrgBilling)
class OrgBillingAdmin(admin.ModelAdmin):
    list_display = ("organization", "plan", "status", "spend_cap_usd", "current_period_end")
    list_filter = ("plan", "status")
    search_fields = ("organization__name", "organization__slug")
    raw_id_fields = ("organization",)

    def get_queryset(self, request):  # type: ignore[no-untyped-def]
        return OrgBilling.all_orgs.select_related("organization", "plan")  # operators see every org
