"""Stripe's webhooks: dj-stripe's view (signature check, each event once, the object re-read from Stripe),
with its bare refusals turned into our error shape."""

import json
from typing import Any

from django.http import HttpRequest, HttpResponse
from djstripe.views import ProcessWebhookView

from saas.core.errors import error_response


class StripeWebhookView(ProcessWebhookView):
    def post(self, request: HttpRequest, uuid: Any) -> HttpResponse:
        if "stripe-signature" not in request.headers:
            return error_response("invalid_signature", "The Stripe-Signature header is missing.", 400)
        response = super().post(request, uuid)
        if response.status_code == 400:
            return error_response("invalid_signature",
                                  "The webhook's signature does not match this endpoint's secret (or it is too old).",
                                  400)  # fmt: skip
        return HttpResponse(json.dumps({"received": True, "trigger": response.content.decode()}),
                            content_type="application/json")  # fmt: skip
