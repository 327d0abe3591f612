"""No plaintext API key, invitation token or password anywhere in the database."""

import re

import pytest
from django.core import mail
from django.db import connection

from accounts import invitations, services
from tests.accounts.conftest import issue_key

pytestmark = pytest.mark.django_db


def _all_text_in_the_database() -> str:
    chunks = []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND data_type IN ('text', 'character varying', 'jsonb', 'ARRAY')"
        )
        for table, column in cursor.fetchall():
            cursor.execute(f'SELECT "{column}"::text FROM "{table}" WHERE "{column}" IS NOT NULL')  # noqa: S608
            chunks.extend(row[0] for row in cursor.fetchall())
    return "\n".join(chunks)


def test_secrets_are_stored_only_as_hashes(org, make_member, client, django_capture_on_commit_callbacks):
    password = "Plaintext-Password-42!"
    client.post("/accounts/signup/", {"email": "secret@example.com", "password1": password, "password2": password})
    key = issue_key(org, scopes=["read", "admin"])
    admin = make_member(org, role="admin")
    with django_capture_on_commit_callbacks(execute=True):
        invitations.invitation_create(
            principal=services.permissions.principal_for_member(admin),
            email="invitee@example.com",
            role="member",
        )
    token = re.search(r"/invitations/([\w-]+)/", mail.outbox[-1].body).group(1)

    everything = _all_text_in_the_database()
    assert "secret@example.com" in everything  # the scan does see the data
    assert key.api_key.prefix in everything
    secret_part = services.API_KEY_PATTERN.match(key.secret).group(2)  # may itself contain "_"
    for secret in (password, key.secret, secret_part, token):
        assert secret not in everything
