"""allauth's hooks: personal org at sign-up, client IP, the sign-in lockout's key, disposable addresses."""

import logging
from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.mfa.adapter import DefaultMFAAdapter
from disposable_email_domains import blocklist as DISPOSABLE_DOMAINS
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from prometheus_client import Counter

from accounts import services
from accounts.authentication import client_ip, request_origin
from saas.core import crypto
from saas.core.ratelimit import RateLimited

logger = logging.getLogger(__name__)

SIGNUPS_REFUSED = Counter("crewdesk_signups_refused_total", "Sign-ups refused before an account existed", ["reason"])


def signup_refused(request: Any, *, reason: str, email: str = "") -> None:
    """A refused sign-up, in the structured log and on the Prometheus counter. There is no org yet to hold an
    audit row, and the address is not anyone's account: the log keeps the domain, never the local part."""
    SIGNUPS_REFUSED.labels(reason=reason).inc()
    logger.warning(
        "signup refused",
        extra={
            "reason": reason,
            "email_domain": email.rpartition("@")[2],
            "ip": client_ip(request) if request else None,
        },
    )


def email_domain_is_disposable(email: str) -> bool:
    domain = email.rpartition("@")[2].strip().lower().rstrip(".")
    allowed = {d.lower() for d in settings.SIGNUP_ALLOWED_DISPOSABLE_DOMAINS}
    # A subdomain of a listed domain is as disposable as the domain (x.mailinator.com).
    parts = domain.split(".")
    candidates = {".".join(parts[i:]) for i in range(len(parts) - 1)}
    if candidates & allowed:
        return False
    return bool(candidates & DISPOSABLE_DOMAINS)


class AccountAdapter(DefaultAccountAdapter):
    def save_user(self, request: Any, user: Any, form: Any, commit: bool = True) -> Any:
        """Every new account starts with a personal org, created with the user in one transaction."""
        with transaction.atomic():
            user = super().save_user(request, user, form, commit=commit)
            if commit:
                services.organization_create_personal(user=user, origin=request_origin(request))
        return user

    def get_client_ip(self, request: Any) -> str:
        """allauth's per-IP rate limits read the client's address where the rest of the project reads it."""
        return client_ip(request) or "unknown"

    def clean_email(self, email: str) -> str:
        email = super().clean_email(email)
        if settings.SIGNUP_REFUSE_DISPOSABLE_EMAIL and email_domain_is_disposable(email):
            signup_refused(self.request, reason="disposable_email", email=email)
            raise ValidationError(
                "Addresses of disposable email services cannot be used here; please use a permanent address.",
                code="disposable_email",
            )
        return email

    # --- The sign-in lockout -------------------------------------------------------------------------------
    # allauth counts failed sign-ins in ACCOUNT_RATE_LIMITS["login_failed"]: "/ip" rates per client address
    # (credential stuffing across accounts) and "/key" rates per this key. allauth's key is the address alone,
    # so five wrong passwords from anywhere locked the owner out everywhere; ours is the address *and* the
    # client IP, so a stranger's guesses lock out only the stranger's own address.

    def _get_login_attempts_cache_key(self, request: Any, **credentials: Any) -> str:
        return f"{super()._get_login_attempts_cache_key(request, **credentials)}@{self.get_client_ip(request)}"

    def pre_authenticate(self, request: Any, **credentials: Any) -> None:
        try:
            super().pre_authenticate(request, **credentials)
        except ValidationError as exc:
            if exc.code != "too_many_login_attempts":
                raise
            from accounts.middleware import rate_limited_response

            refused = RateLimited(
                "Too many failed sign-ins from this address; try again later.",
                retry_after=_login_failed_window(),
                limit="auth:login_failed",
            )
            raise ImmediateHttpResponse(rate_limited_response(request, refused)) from exc


def _login_failed_window() -> int:
    from allauth.account import app_settings
    from allauth.core.internal.ratelimit import parse_rates

    rates = parse_rates(app_settings.RATE_LIMITS.get("login_failed"))
    return int(max((rate.duration for rate in rates), default=60))


class MFAAdapter(DefaultMFAAdapter):
    """Two-factor secrets (the TOTP key, the recovery codes' seed) are stored encrypted like prompts are, under
    LLM_ENCRYPTION_KEYS, and rotated with them (manage.py rotate_encryption_keys)."""

    def encrypt(self, text: str) -> str:
        return crypto.encrypt(text)

    def decrypt(self, encrypted_text: str) -> str:
        return crypto.decrypt(encrypted_text)
