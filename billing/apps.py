from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self) -> None:
        from accounts.invitations import register_members_limit
        from billing import payments  # connects the Stripe webhook handlers
        from billing.models import OrgBilling, Plan
        from billing.selectors import members_limit, memo, plan_rate_limits
        from saas.core.api import register_plan_rate_limits

        memo.watch(Plan, OrgBilling)
        payments.use_api_base()
        register_members_limit(members_limit)  # the layers below ask billing for the plan's limits
        register_plan_rate_limits(plan_rate_limits)

        from billing.privacy import STORE, payments_notice
        from saas.core.privacy import register_notice, register_store

        register_store(STORE)
        register_notice("Payments", payments_notice)
