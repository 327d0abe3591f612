"""Copies used on assumption within an API-key request (saas.core.memo, `versions_read_once(optimistic=True)`):
the request spends no round trip on the memos' versions alone, and a copy another process made stale is never
what decides its outcome."""

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from accounts.models import ApiKey
from accounts.services import key_memo
from billing import selectors as billing_selectors
from saas.core import memo
from saas.core.redis import get_redis
from saas.llm import config
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import OrganizationFactory
from tests.core.memo_reads import CountingRedis


@pytest.fixture
def org(db):
    return OrganizationFactory()


def _counted(key_id: Any) -> int:
    """What the key's general API bucket has counted in its current window."""
    redis = get_redis()
    return sum(int(redis.get(name) or 0) for name in redis.scan_iter(match=f"*LIMITER/api:key/{key_id}/*"))


def test_a_request_with_its_copies_held_reads_no_version_on_its_own(org, monkeypatch):
    issued = issue_key(org)
    client = key_client(issued.secret)
    assert client.get("/v1/models").status_code == 200  # the key, plan and registry copies are held now
    counting = CountingRedis()
    monkeypatch.setattr(memo, "get_redis", lambda: counting)
    assert client.get("/v1/models").status_code == 200
    assert counting.sent == []  # the rate-limit script read them, and checked the ones assumed
    assert _counted(issued.api_key.pk) == 2


def test_a_key_revoked_by_another_process_is_refused_at_once_and_counts_in_no_bucket(org):
    issued = issue_key(org)
    client = key_client(issued.secret)
    assert client.get("/v1/models").status_code == 200
    # Another process revokes it: this process's copy stays as it was, only the version in Redis moves.
    ApiKey.all_orgs.filter(pk=issued.api_key.pk).update(revoked_at=timezone.now())
    key_memo.publish_change()
    response = client.get("/v1/models")
    assert response.status_code == 401 and response.json()["error"]["code"] == "key_revoked"
    assert _counted(issued.api_key.pk) == 1  # the stale copy's request was not counted, the refused one neither


def test_an_error_decided_on_an_old_copy_is_given_only_if_the_copy_was_current(org):
    issued = issue_key(org)
    client = key_client(issued.secret)
    ApiKey.all_orgs.filter(pk=issued.api_key.pk).update(expires_at=timezone.now() - timedelta(days=1))
    key_memo.forget_local()
    expired = client.get("/v1/models")
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "key_expired"  # kept so, expired
    # Another process extends it: the copy here still says expired, the version in Redis says it changed.
    ApiKey.all_orgs.filter(pk=issued.api_key.pk).update(expires_at=timezone.now() + timedelta(days=1))
    key_memo.publish_change()
    assert client.get("/v1/models").status_code == 200
    assert client.get("/v1/models").status_code == 200  # and the fresh copy is the one kept


def test_without_redis_the_request_trusts_no_copy(org, monkeypatch):
    issued = issue_key(org)
    client = key_client(issued.secret)
    assert client.get("/v1/models").status_code == 200
    ApiKey.all_orgs.filter(pk=issued.api_key.pk).update(revoked_at=timezone.now())  # no announcement at all

    class Down:
        def mget(self, keys: list[str]) -> Any:
            raise ConnectionError("redis is down")

        def get(self, key: str) -> Any:
            raise ConnectionError("redis is down")

    with memo.versions_read_once(optimistic=True):
        from accounts import services

        key_memo.current()  # assumed from the copy
        monkeypatch.setattr(memo, "get_redis", Down)
        with pytest.raises(memo.Stale):
            memo.confirm()
        # From here on every copy is checked first; unreadable versions load from the database.
        with pytest.raises(services.KeyRejected, match="revoked"):
            services.api_key_authenticate(secret=issued.secret, ip="192.0.2.1")


def test_assumptions_are_confirmed_by_a_read_of_their_own_when_no_script_carries_them(db):
    config.current(), billing_selectors.memo.current()  # held
    with memo.versions_read_once(optimistic=True):
        config.current()
        billing_selectors.memo.current()
        keys, expected = memo.check_versions()
        assert config.memo.version_key in keys and billing_selectors.memo.version_key in keys
        assert all(value != memo.UNCHECKED for key, value in zip(keys, expected, strict=True)
                   if key in (config.memo.version_key, billing_selectors.memo.version_key))  # fmt: skip
        memo.confirm()  # nothing changed: they hold
        config.memo.publish_change()
        config.current()  # read in this block already: the block keeps the version it read
    with memo.versions_read_once(optimistic=True):
        config.current()  # assumed from the copy, which is older than the version now in Redis
        with pytest.raises(memo.Stale):
            memo.confirm()
        assert memo.check_versions()[0] == [
            key for key in dict.fromkeys(m.version_key for m in memo._memos) if key != config.memo.version_key
        ]
    with memo.versions_read_once():
        config.current()  # a block that is not optimistic reads the version first, as before
        assert memo.check_versions()[0] == []
