"""Stripe's webhooks: dj-stripe's view (each event once, the object re-read from Stripe), behind our own check
of the signature, with its bare refusals turned into our error shape.

dj-stripe writes every body it receives to a WebhookEventTrigger row (and logs some) *before* it checks the
signature: anyone could fill the table and the logs. Here the signature is checked first, against the
endpoint's secret, and a body that is not Stripe's is refused with a 400 before anything is written or logged.
"""

import json
from typing import Any

import stripe
from django.http import HttpRequest, HttpResponse
from djstripe.models import WebhookEndpoint
from djstripe.views import ProcessWebhookView

from saas.core.errors import error_response

INVALID = "The webhook's signature does not match this endpoint's secret (or it is too old)."


class StripeWebhookView(ProcessWebhookView):
    def post(self, request: HttpRequest, uuid: Any) -> HttpResponse:
        signature = request.headers.get("stripe-signature")
        if not signature:
            return error_response("invalid_signature", "The Stripe-Signature header is missing.", 400)
        endpoint = WebhookEndpoint.objects.filter(djstripe_uuid=uuid).first()
        if endpoint is None or not endpoint.secret:
            return error_response("not_found", "There is no webhook endpoint at this address.", 404)
        try:
            stripe.WebhookSignature.verify_header(request.body, signature, endpoint.secret,
                                                  tolerance=endpoint.djstripe_tolerance)  # fmt: skip
        except (stripe.SignatureVerificationError, ValueError):
            return error_response("invalid_signature", INVALID, 400)
        response = super().post(request, uuid)  # signed by Stripe: now dj-stripe records and processes it
        if response.status_code == 400:
            return error_response("invalid_signature", INVALID, 400)
        return HttpResponse(json.dumps({"received": True, "trigger": response.content.decode()}),
                            content_type="application/json")  # fmt: skip
