"""A store that is down or out of connections is an outage the caller is told about (503, the one error shape,
Retry-After), never an HTML 500; and a burst of threads waits for Redis connections instead of failing."""

import threading

import pytest
import redis
from django.db import OperationalError
from django.test import RequestFactory

from saas.core.errors import api_exception_handler, handler500
from saas.core.redis import get_redis
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import OrganizationFactory
from tests.conftest import free_port


@pytest.fixture
def unreachable_redis(settings):
    """Our own Redis client pointed at a port nobody listens on (the cache and broker stay up)."""
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    get_redis.cache_clear()
    from saas.core import ratelimit

    ratelimit._limiter.cache_clear()
    yield
    get_redis.cache_clear()
    ratelimit._limiter.cache_clear()


@pytest.mark.parametrize(
    "exc",
    [redis.ConnectionError("refused"), redis.exceptions.MaxConnectionsError("Too many"), OperationalError("pool")],
)
def test_store_outages_are_a_503_in_the_one_shape(exc):
    response = api_exception_handler(exc, {})
    assert response is not None and response.status_code == 503
    assert response.data["error"]["code"] == "unavailable"
    assert response["Retry-After"] == "1"


@pytest.mark.django_db
def test_an_api_call_while_redis_is_unreachable_says_so(unreachable_redis):
    secret = issue_key(OrganizationFactory(), scopes=["read"]).secret
    response = key_client(secret).get("/api/v1/documents")
    assert response.status_code == 503, response.content[:300]
    assert response.json()["error"]["code"] == "unavailable"
    assert response["Retry-After"] == "1"


def test_the_openai_surface_gets_its_500s_in_json():
    request = RequestFactory().post("/v1/chat/completions")
    response = handler500(request)
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"


def test_threads_beyond_the_redis_pool_wait_for_a_connection(settings):
    settings.REDIS_POOL_MAX = 2
    get_redis.cache_clear()
    try:
        pool = get_redis().connection_pool
        held = [pool.get_connection(), pool.get_connection()]  # the pool is empty now
        answers: list[object] = []
        waiter = threading.Thread(target=lambda: answers.append(get_redis().ping()))
        waiter.start()
        waiter.join(0.3)
        assert answers == []  # waiting for a connection, not failed with "Too many connections"
        for connection in held:
            pool.release(connection)
        waiter.join(10)
        assert answers == [True]
    finally:
        get_redis.cache_clear()
