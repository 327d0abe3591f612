import hashlib
import hmac
import io
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.management import call_command
from djstripe.models import WebhookEndpoint

from billing.catalogue import sync_plans
from billing.models import Plan
from tests.billing.fake_stripe import FakeStripeServer
from tests.llm.conftest import fake, models  # noqa: F401  (fixtures)

SECRET_KEY = "sk_test_crewdesk0123456789abcdef"
WEBHOOK_SECRET = "whsec_crewdesktests0123456789"


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    """Stripe's signature scheme: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the endpoint secret>."""
    at = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


@dataclass
class LocalStripe:
    server: FakeStripeServer
    endpoint: WebhookEndpoint

    @property
    def webhook_path(self) -> str:
        return f"/stripe/webhook/{self.endpoint.djstripe_uuid}/"

    def event(self, type_: str, obj: dict[str, Any], *, event_id: str | None = None, created: int | None = None):
        return {
            "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
            "object": "event", "api_version": "2026-05-27.dahlia", "created": created or int(time.time()),
            "livemode": False, "type": type_, "data": {"object": obj}, "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
        }  # fmt: skip

    def deliver(self, client: Any, event: dict[str, Any], *, secret: str = WEBHOOK_SECRET, at: int | None = None):
        body = json.dumps(event).encode()
        return client.post(self.webhook_path, body, content_type="application/json",
                           HTTP_STRIPE_SIGNATURE=sign(body, secret, at))  # fmt: skip


@pytest.fixture(scope="session")
def fake_stripe_server():
    return FakeStripeServer.shared()


@pytest.fixture
def local_stripe(fake_stripe_server, settings) -> LocalStripe:
    """Stripe switched on against the local server, the plans linked, the webhook endpoint recorded (the test
    says which database access it needs)."""
    fake_stripe_server.reset()
    settings.STRIPE_SECRET_KEY = settings.STRIPE_TEST_SECRET_KEY = SECRET_KEY
    settings.STRIPE_API_BASE = fake_stripe_server.base_url
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    sync_plans(Plan)
    Plan.objects.update(stripe_price_id="", stripe_metered_price_id="")
    call_command("stripe_setup", site_url="http://testserver", stdout=io.StringIO())
    return LocalStripe(fake_stripe_server, WebhookEndpoint.objects.get(id="we_crewdesk"))


def stripe_env(server: FakeStripeServer) -> dict[str, str]:
    """The same switches for a server process."""
    return {
        "STRIPE_SECRET_KEY": SECRET_KEY,
        "STRIPE_API_BASE": server.base_url,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
