"""Link the plan catalogue to Stripe and record the webhook endpoint with dj-stripe. Safe to run again.

    manage.py stripe_setup [--site-url https://crewdesk.example.com]

- each paid plan without a Stripe price gets a product and a monthly price (and, where the Stripe account
  supports billing meters, a metered price for overage on the meter STRIPE_METER_EVENT_NAME);
- with STRIPE_WEBHOOK_SECRET set, dj-stripe's endpoint is recorded with that secret and its URL printed: give
  that URL to Stripe (dashboard, or `stripe listen --forward-to`).
"""

from typing import Any

import stripe
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from djstripe.models import WebhookEndpoint

from billing import payments
from billing.models import Plan

WEBHOOK_ENDPOINT_ID = "we_crewdesk"


class Command(BaseCommand):
    help = "Create Stripe products and prices for the paid plans, and record the webhook endpoint."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--site-url", default=settings.SITE_URL, help="The public URL Stripe posts to.")

    def handle(self, *args: Any, site_url: str, **options: Any) -> None:
        if not payments.stripe_configured():
            raise CommandError("STRIPE_SECRET_KEY is empty: Stripe is not configured.")
        api = payments._api()
        for plan in Plan.objects.filter(monthly_price_usd__gt=0):
            self._link_plan(plan, api)
        if settings.STRIPE_WEBHOOK_SECRET:
            endpoint = self._record_webhook(site_url.rstrip("/"))
            self.stdout.write(f"Webhook endpoint: {endpoint.url}")
        else:
            self.stdout.write("STRIPE_WEBHOOK_SECRET is empty: no webhook endpoint recorded.")

    def _link_plan(self, plan: Plan, api: dict[str, Any]) -> None:
        try:
            if not plan.stripe_price_id:
                product = stripe.Product.create(name=f"Crewdesk {plan.name}", metadata={"plan": plan.slug},
                                                idempotency_key=f"crewdesk-product-{plan.slug}", **api)  # fmt: skip
                price = stripe.Plan.create(
                    product=product.id, amount=int(plan.monthly_price_usd * 100), currency="usd", interval="month",
                    nickname=plan.name, metadata={"plan": plan.slug}, idempotency_key=f"crewdesk-price-{plan.slug}",
                    **api,
                )  # fmt: skip
                plan.stripe_price_id = price.id
                plan.save(update_fields=["stripe_price_id", "updated_at"])
            self.stdout.write(f"{plan.name}: {plan.stripe_price_id}")
        except stripe.StripeError as error:
            raise CommandError(f"Stripe refused to create the {plan.name} plan: {error}") from error
        if plan.price_per_extra_request > 0 and not plan.stripe_metered_price_id:
            self._link_metered_price(plan, api)

    def _link_metered_price(self, plan: Plan, api: dict[str, Any]) -> None:
        try:
            meter = stripe.billing.Meter.create(
                display_name="Crewdesk AI requests", event_name=settings.STRIPE_METER_EVENT_NAME,
                default_aggregation={"formula": "sum"}, idempotency_key="crewdesk-meter", **api,
            )  # fmt: skip
            price = stripe.Price.create(
                product=str(stripe.Plan.retrieve(plan.stripe_price_id, **api).product), currency="usd",
                unit_amount_decimal=plan.price_per_extra_request * 100, nickname=f"{plan.name} overage",
                recurring={"interval": "month", "usage_type": "metered", "meter": meter.id},
                idempotency_key=f"crewdesk-overage-{plan.slug}", **api,
            )  # fmt: skip
        except stripe.StripeError as error:
            self.stdout.write(f"{plan.name}: no metered price ({error}); link one in the admin to bill overage.")
            return
        plan.stripe_metered_price_id = price.id
        plan.save(update_fields=["stripe_metered_price_id", "updated_at"])

    def _record_webhook(self, site_url: str) -> WebhookEndpoint:
        endpoint = WebhookEndpoint.objects.filter(id=WEBHOOK_ENDPOINT_ID).first() or WebhookEndpoint(
            id=WEBHOOK_ENDPOINT_ID, livemode=settings.STRIPE_LIVE_MODE, enabled_events=["*"], status="enabled",
            api_version=stripe.api_version,
        )  # fmt: skip
        endpoint.secret = settings.STRIPE_WEBHOOK_SECRET
        endpoint.save()
        endpoint.url = f"{site_url}/stripe/webhook/{endpoint.djstripe_uuid}/"
        endpoint.save(update_fields=["url"])
        return endpoint
