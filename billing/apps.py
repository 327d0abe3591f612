from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self) -> None:
        from accounts.services import register_members_limit
        from billing import payments  # connects the Stripe webhook handlers
        from billing.models import OrgBilling, Plan
        from billing.selectors import members_limit, memo

        memo.watch(Plan, OrgBilling)
        payments.use_api_base()
        register_members_limit(members_limit)  # accounts asks billing for the plan's members limit
