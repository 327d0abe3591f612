"""The gateway's in-memory copy of the registry and org settings: read once, dropped on every change."""

from typing import Any

import pytest

from saas.core import memo
from saas.core.redis import get_redis
from saas.llm import config, gateway
from saas.llm.models import ModelConfig, OrgLLMSettings
from saas.llm.providers import ChatRequest
from tests.accounts.factories import OrganizationFactory
from tests.core.memo_reads import CountingRedis

pytestmark = pytest.mark.django_db
HELLO = ChatRequest(messages=[{"role": "user", "content": "Hello"}])


def test_a_call_reads_the_configuration_once_then_from_memory(models, django_assert_num_queries):
    org = OrganizationFactory()
    snapshot = config.current()
    assert snapshot.model("test-small").upstream_model == "fake-small"
    snapshot.policy(org)
    with django_assert_num_queries(0):
        again = config.current()
        assert again is snapshot and again.policy(org).pii_policy == "mask"


def test_a_saved_change_drops_the_copy_here_and_tells_the_other_processes(models, django_capture_on_commit_callbacks):
    before = config.current()
    version = get_redis().get(config.memo.version_key) or 0
    with django_capture_on_commit_callbacks(execute=True):
        models["small"].context_window = 1234
        models["small"].save()
    assert int(get_redis().get(config.memo.version_key)) == int(version) + 1
    after = config.current()
    assert after is not before and after.model("test-small").context_window == 1234


def test_a_change_announced_by_another_process_is_picked_up(models):
    org: Any = OrganizationFactory()
    assert config.current().policy(org).allowed_models == []
    # Another process saved this (no signal here): its commit bumped the version.
    OrgLLMSettings.objects.for_org(org).bulk_create([OrgLLMSettings(organization=org, allowed_models=["x"])])
    assert config.current().policy(org).allowed_models == []  # still the copy: nobody announced it
    config.memo.publish_change()
    assert config.current().policy(org).allowed_models == ["x"]


def test_a_copy_older_than_the_limit_is_reread(models, settings):
    first = config.current()
    settings.LLM_CONFIG_CACHE_SECONDS = 0
    assert config.current() is not first and config.current() is not config.current()


def test_without_redis_the_database_is_read_every_time(models, monkeypatch):
    first = config.current()

    def down():
        raise ConnectionError("redis is down")

    monkeypatch.setattr(memo, "get_redis", down)
    ModelConfig.objects.filter(alias="test-small").update(context_window=999)  # no signal, no announcement
    snapshot = config.current()
    assert snapshot is not first and snapshot.model("test-small").context_window == 999


def test_the_gateway_resolves_from_the_copy(fake, models, django_assert_num_queries):
    caller = gateway.Caller(org=OrganizationFactory())
    gateway.chat(caller=caller, model="test-large", request=HELLO, bypass_cache=True)
    # The ledger row and its usage row (billing) in a savepoint (a refused insert must not break the caller's
    # transaction), nothing else.
    with django_assert_num_queries(4):
        gateway.chat(caller=caller, model="test-large", request=HELLO, bypass_cache=True)


def test_within_a_request_every_memo_version_is_read_in_one_round_trip(models, monkeypatch):
    from accounts.services import key_memo
    from billing import selectors as billing_selectors

    org = OrganizationFactory()
    config.current(), key_memo.current(), billing_selectors.memo.current()  # the copies are in memory
    counting = CountingRedis()
    monkeypatch.setattr(memo, "get_redis", lambda: counting)
    with memo.versions_read_once():
        for _ in range(3):  # a gateway call takes the configuration several times
            assert config.current().policy(org).pii_policy == "mask"
        key_memo.current()
        billing_selectors.memo.current()
    assert counting.sent == ["MGET"]
    config.current()  # outside a request: one GET per take, as before
    assert counting.sent == ["MGET", "GET"]


def test_a_change_announced_during_a_request_is_seen_by_the_next_one(models):
    org: Any = OrganizationFactory()
    assert config.current().policy(org).allowed_models == []
    OrgLLMSettings.objects.for_org(org).bulk_create([OrgLLMSettings(organization=org, allowed_models=["x"])])
    with memo.versions_read_once():
        assert config.current().policy(org).allowed_models == []
        config.memo.publish_change()  # another process committed a change meanwhile
        assert config.current().policy(org).allowed_models == []  # this request keeps the version it read
    with memo.versions_read_once():
        assert config.current().policy(org).allowed_models == ["x"]


def test_within_a_request_without_redis_no_copy_is_trusted(models, monkeypatch):
    first = config.current()

    class Down:
        def mget(self, keys: list[str]) -> Any:
            raise ConnectionError("redis is down")

    monkeypatch.setattr(memo, "get_redis", Down)
    ModelConfig.objects.filter(alias="test-small").update(context_window=999)
    with memo.versions_read_once():
        snapshot = config.current()
    assert snapshot is not first and snapshot.model("test-small").context_window == 999
