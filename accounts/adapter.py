from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from allauth.mfa.adapter import DefaultMFAAdapter
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import transaction

from accounts import services
from accounts.authentication import request_origin
from saas.core import crypto
from saas.core.client_ip import client_ip


class AccountAdapter(DefaultAccountAdapter):
    def save_user(self, request: Any, user: Any, form: Any, commit: bool = True) -> Any:
        """Every new account starts with a personal org, created with the user in one transaction."""
        with transaction.atomic():
            user = super().save_user(request, user, form, commit=commit)
            if commit:
                services.organization_create_personal(user=user, origin=request_origin(request))
        return user

    def get_client_ip(self, request: Any) -> str:
        """allauth's own rate limits count per client address: the same one as ours (TRUSTED_PROXIES)."""
        ip = client_ip(request)
        if not ip:
            raise DjangoPermissionDenied("Unable to determine client IP address")
        return ip


class MFAAdapter(DefaultMFAAdapter):
    """Two-factor secrets (the TOTP key, the recovery codes' seed) are stored encrypted like prompts are, under
    LLM_ENCRYPTION_KEYS, and rotated with them (manage.py rotate_encryption_keys)."""

    def encrypt(self, text: str) -> str:
        return crypto.encrypt(text)

    def decrypt(self, encrypted_text: str) -> str:
        return crypto.decrypt(encrypted_text)
