from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self) -> None:
        from billing.models import OrgBilling, Plan
        from billing.selectors import memo

        memo.watch(Plan, OrgBilling)
        from billing import payments  # connects the Stripe webhook handlers

        payments.use_api_base()
