"""Encryption at rest for prompts, answers, extracted document text and two-factor secrets (allauth's TOTP keys
and recovery-code seeds, through accounts.adapter.MFAAdapter): Fernet keys from LLM_ENCRYPTION_KEYS
(comma-separated, newest first). MultiFernet decrypts with any listed key and encrypts with the first, so adding
a new key in front rotates without downtime; `manage.py rotate_encryption_keys` then re-encrypts the old rows in
batches, after which the old key can be removed.

Every encrypted column is a text field whose name ends in `_encrypted` (the rotation command finds them all by
that name), or a key of a JSON column listed in `JSON_SECRETS`. A model reads and writes such a column as plain
text, or as JSON, through `encrypted_text` / `encrypted_json`: `conversation.title` decrypts `title_encrypted`.
Nothing can filter, order or search on what they hold in SQL; that is the point."""

import base64
import hashlib
import json
from collections.abc import Callable
from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

# JSON columns holding encrypted values under some keys: (app label, model, field, keys).
JSON_SECRETS = [("mfa", "Authenticator", "data", ("secret", "seed"))]


@cache
def _keys() -> list[Fernet]:
    keys = [k.strip() for k in settings.LLM_ENCRYPTION_KEYS if k.strip()]
    if not keys:
        # Local and test runs only (production requires the setting): a key derived from SECRET_KEY.
        derived = base64.urlsafe_b64encode(hashlib.sha256(b"crewdesk-llm:" + settings.SECRET_KEY.encode()).digest())
        keys = [derived.decode()]
    return [Fernet(k) for k in keys]


@cache
def _fernet() -> MultiFernet:
    return MultiFernet(_keys())


@receiver(setting_changed)
def _keys_changed(setting: str, **kwargs: Any) -> None:
    if setting in ("LLM_ENCRYPTION_KEYS", "SECRET_KEY"):
        _keys.cache_clear()
        _fernet.cache_clear()


def is_current(token: str) -> bool:
    """Whether the newest key encrypted this token (nothing to rotate)."""
    try:
        _keys()[0].decrypt(token.encode())
    except InvalidToken:
        return False
    return True


def rotate(token: str) -> str:
    """The same plaintext under the newest key (ValueError when no listed key opens it)."""
    try:
        return _fernet().rotate(token.encode()).decode()
    except InvalidToken as exc:
        raise ValueError("cannot decrypt: none of LLM_ENCRYPTION_KEYS matches this row") from exc


def encrypt(text: str) -> str:
    return _fernet().encrypt(text.encode()).decode() if text else ""


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ValueError("cannot decrypt: none of LLM_ENCRYPTION_KEYS matches this row") from exc


def is_encrypted(value: str) -> bool:
    """Whether a listed key opens this value (a migration tells old plaintext from our tokens this way)."""
    try:
        _fernet().decrypt(value.encode())
    except (InvalidToken, ValueError):
        return False
    return True


def encrypt_json(value: Any) -> str:
    """A JSON value encrypted (an empty value, such as `{}`, is the empty string)."""
    return encrypt(json.dumps(value, ensure_ascii=False, sort_keys=True)) if value else ""


def decrypt_json(token: str, empty: Callable[[], Any] = dict) -> Any:
    return json.loads(decrypt(token)) if token else empty()


def encrypted_text(column: str) -> property:
    """A model attribute that is the plaintext of the `*_encrypted` text column `column`: reading decrypts,
    assigning encrypts (an empty value stays an empty column). Django's model constructor accepts properties, so
    `Model(title=...)` and `objects.create(title=...)` work; `filter()`, `values()` and `update_fields` name the
    column itself."""

    def read(instance: Any) -> str:
        return decrypt(getattr(instance, column))

    def write(instance: Any, value: str | None) -> None:
        setattr(instance, column, encrypt(value or ""))

    return property(read, write, doc=f"The plaintext of `{column}` (saas.core.crypto).")


def encrypted_json(column: str, empty: Callable[[], Any] = dict) -> property:
    """Like `encrypted_text`, for a JSON value (`empty()` when the column is empty). Reading gives a fresh
    object each time: assign the changed value back to store it."""

    def read(instance: Any) -> Any:
        return decrypt_json(getattr(instance, column), empty)

    def write(instance: Any, value: Any) -> None:
        setattr(instance, column, encrypt_json(value))

    return property(read, write, doc=f"The JSON value of `{column}`, decrypted (saas.core.crypto).")
