"""allauth's sign-up form with the project's abuse limits (ACCOUNT_FORMS["signup"])."""

from typing import Any

from allauth.account.forms import SignupForm as AllauthSignupForm
from allauth.core import context
from allauth.core.exceptions import ImmediateHttpResponse
from django.conf import settings

from accounts.adapter import signup_refused
from accounts.authentication import client_ip
from accounts.middleware import rate_limited_response
from saas.core.ratelimit import Bucket, RateLimited, enforce_rate_limits


class SignupForm(AllauthSignupForm):
    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if not self.errors:
            self._throttle()
        return cleaned

    def _throttle(self) -> None:
        """Sign-ups that would go ahead (a new account, or the "you already have one" email) count per client
        address and across the site: a burst from one network, or from everywhere at once, gets 429. Counted
        alike for new and existing addresses, so the limit says nothing about who has an account."""
        request = context.request
        try:
            enforce_rate_limits(
                request,
                [
                    Bucket("auth:signup_ip", client_ip(request) or "unknown", settings.RATE_LIMITS["signup_ip"]),
                    Bucket("auth:signup_global", "all", settings.RATE_LIMITS["signup_global"]),
                ],
            )
        except RateLimited as exc:
            signup_refused(request, reason="rate_limited", email=self.cleaned_data.get("email") or "")
            raise ImmediateHttpResponse(rate_limited_response(request, exc)) from exc
