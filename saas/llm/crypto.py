"""Encryption at rest for prompts and answers in the ledger: Fernet keys from LLM_ENCRYPTION_KEYS (comma-
separated, newest first). MultiFernet decrypts with any listed key and encrypts with the first, so adding a
new key in front rotates without downtime; old rows are re-encrypted in batches later."""

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


@cache
def _fernet() -> MultiFernet:
    keys = [k.strip() for k in settings.LLM_ENCRYPTION_KEYS if k.strip()]
    if not keys:
        # Local and test runs only (production requires the setting): a key derived from SECRET_KEY.
        derived = base64.urlsafe_b64encode(hashlib.sha256(b"crewdesk-llm:" + settings.SECRET_KEY.encode()).digest())
        keys = [derived.decode()]
    return MultiFernet([Fernet(k) for k in keys])


def encrypt(text: str) -> str:
    return _fernet().encrypt(text.encode()).decode() if text else ""


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ValueError("cannot decrypt: none of LLM_ENCRYPTION_KEYS matches this row") from exc
