"""Rotating the encryption key: every `*_encrypted` column of every store, and the two-factor secrets, are
re-encrypted under the new key in batches, a second run has nothing to do, and once it is done the old key can be
removed."""

import io
import time
from datetime import timedelta
from typing import Any

import pytest
from allauth.mfa.models import Authenticator
from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, hotp_value
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from saas.core import crypto
from saas.core.management.commands.rotate_encryption_keys import encrypted_columns
from saas.llm.models import Provider, SemanticCacheEntry
from tests.accounts.factories import UserFactory
from tests.agents.factories import (
    ConversationFactory,
    CrewFactory,
    FeedbackFactory,
    MessageFactory,
    RunFactory,
    RunStepFactory,
)
from tests.analytics.factories import EvalCaseFactory, EvalResultFactory, EvalRunFactory
from tests.documents.factories import ChunkFactory, DocumentFactory
from tests.llm.factories import LLMCallFactory, OrgProviderFactory

pytestmark = pytest.mark.django_db

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def _one_row_in_every_encrypted_column(marker: str) -> dict[tuple[type, str], Any]:
    """A row per encrypted column, each holding a ciphertext of `marker` under the key in force."""
    call = LLMCallFactory()
    org = call.organization
    rows = [
        call, RunFactory(organization=org), RunStepFactory(organization=org), MessageFactory(organization=org),
        DocumentFactory(organization=org), ChunkFactory(organization=org), ConversationFactory(organization=org),
        FeedbackFactory(organization=org), CrewFactory(organization=org),
        EvalCaseFactory(organization=org), EvalRunFactory(organization=org), EvalResultFactory(organization=org),
        SemanticCacheEntry.all_orgs.create(
            organization=org, model_alias="local", prompt_version="v1", scope="s", embedding=[0.1] * 384,
            answer_encrypted="x", expires_at=timezone.now() + timedelta(days=1)),
        OrgProviderFactory(organization=org),  # a team's own key and headers
        Provider.objects.create(name="rotation-test", kind="openai", base_url="https://example.test/v1"),
    ]  # fmt: skip
    found: dict[tuple[type, str], Any] = {}
    for model, column in encrypted_columns():
        row = next((row for row in rows if isinstance(row, model)), None)
        assert row is not None, f"teach this test to make a {model.__name__} ({column} is encrypted)"
        model._base_manager.filter(pk=row.pk).update(**{column: crypto.encrypt(f"{marker} {column}")})
        found[(model, column)] = row
    return found


def _tokens(rows):
    return {key: type(row)._base_manager.values_list(key[1], flat=True).get(pk=row.pk) for key, row in rows.items()}


def test_rotation_re_encrypts_every_column_and_the_old_key_can_go(settings):
    settings.LLM_ENCRYPTION_KEYS = [OLD]
    rows = _one_row_in_every_encrypted_column("secret-marker")
    before = _tokens(rows)
    # ledger input and output, cache, run inputs, output and error, steps, messages, documents, chunks, and the
    # personal text of chats and crews: conversation titles, feedback comments, schedule inputs
    assert len(rows) >= 13
    assert {(m._meta.label, c) for m, c in rows} >= {
        ("agents.Conversation", "title_encrypted"), ("agents.Feedback", "comment_encrypted"),
        ("agents.Crew", "schedule_inputs_encrypted"), ("agents.Run", "inputs_encrypted"),
        ("agents.Run", "error_encrypted")}  # fmt: skip

    settings.LLM_ENCRYPTION_KEYS = [NEW, OLD]
    out = io.StringIO()
    with pytest.raises(CommandError, match="not under the newest key"):
        call_command("rotate_encryption_keys", "--check", stdout=out)
    out = io.StringIO()
    call_command("rotate_encryption_keys", "--batch-size", "2", stdout=out)
    assert "llm.LLMCall.input_encrypted: 1 re-encrypted, 0 already under the newest key" in out.getvalue()
    assert "agents.Conversation.title_encrypted: 1 re-encrypted" in out.getvalue()
    assert "agents.Run.inputs_encrypted: 1 re-encrypted" in out.getvalue()
    after = _tokens(rows)
    assert all(after[key] != before[key] for key in rows)  # every ciphertext was rewritten
    again = io.StringIO()
    call_command("rotate_encryption_keys", stdout=again)
    assert " 0 re-encrypted" in again.getvalue() and all(
        line.split(": ")[1].startswith("0 re-encrypted") for line in again.getvalue().splitlines())  # fmt: skip
    call_command("rotate_encryption_keys", "--check", stdout=io.StringIO())  # nothing left: no error

    settings.LLM_ENCRYPTION_KEYS = [NEW]  # the old key removed
    for (model, column), token in _tokens(rows).items():
        assert crypto.decrypt(token) == f"secret-marker {column}", (model, column)


def test_a_row_rewritten_during_the_rotation_is_not_clobbered(settings, monkeypatch):
    settings.LLM_ENCRYPTION_KEYS = [OLD]
    call = LLMCallFactory()
    calls = type(call).all_orgs
    calls.filter(pk=call.pk).update(input_encrypted=crypto.encrypt("old text"))
    settings.LLM_ENCRYPTION_KEYS = [NEW, OLD]
    real_rotate = crypto.rotate

    def rotate_while_the_app_writes(token: str) -> str:
        calls.filter(pk=call.pk).update(input_encrypted=crypto.encrypt("new text"))  # the application, meanwhile
        return real_rotate(token)

    monkeypatch.setattr(crypto, "rotate", rotate_while_the_app_writes)
    out = io.StringIO()
    call_command("rotate_encryption_keys", stdout=out)
    assert "llm.LLMCall.input_encrypted: 0 re-encrypted" in out.getvalue()
    assert crypto.decrypt(calls.values_list("input_encrypted", flat=True).get(pk=call.pk)) == "new text"


def test_two_factor_secrets_are_stored_encrypted_and_rotated_with_the_rest(settings):
    settings.LLM_ENCRYPTION_KEYS = [OLD]
    secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    user = UserFactory()
    authenticator = TOTP.activate(user, secret).instance
    RecoveryCodes.activate(user)
    with connection.cursor() as cursor:
        cursor.execute("SELECT data::text FROM mfa_authenticator WHERE user_id = %s", [user.pk])
        stored = " ".join(row[0] for row in cursor.fetchall())
    assert secret not in stored and '"seed": "gAAAAA' in stored  # Fernet tokens, not the secret or the seed

    settings.LLM_ENCRYPTION_KEYS = [NEW, OLD]
    out = io.StringIO()
    call_command("rotate_encryption_keys", stdout=out)
    assert "mfa.Authenticator.data[secret/seed]: 2 re-encrypted" in out.getvalue()
    settings.LLM_ENCRYPTION_KEYS = [NEW]  # the old key is gone: the secret still opens, and codes still work
    call_command("rotate_encryption_keys", "--check", stdout=io.StringIO())
    code = format_hotp_value(hotp_value(secret, int(time.time()) // 30))
    assert TOTP(Authenticator.objects.get(pk=authenticator.pk)).validate_code(code)
