"""saas/core/on_loop.py: synchronous code run on the event loop, its Redis round trips awaited, its database steps
in a hop, and the ORM anywhere else refused loudly."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import uuid4

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import SynchronousOnlyOperation
from django.db import connection

from saas.core import on_loop
from saas.core.redis import get_redis


def _run(main: Any) -> Any:
    """asyncio.run(main) in a thread of its own: the suite's browser tests keep a loop running in the main thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main).result()


def _on_loop(function: Any, *args: Any) -> tuple[int, Any]:
    """The loop's thread and what `function` returned, run through on_loop.run on an event loop."""

    async def main() -> tuple[int, Any]:
        return threading.get_ident(), await on_loop.run(function, *args)

    return _run(main())  # type: ignore[no-any-return]


def _redis_work(key: str) -> tuple[Any, ...]:
    redis = get_redis()
    script = redis.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    redis.set(key, 1, ex=60)
    pipe = redis.pipeline(transaction=False)
    pipe.incr(key).expire(key, 60)  # chained, as redis-py allows
    pipe.get(key)
    replies = pipe.execute()
    with redis.pipeline() as transaction:
        transaction.mget([key, key + ":missing"])
        (both,) = transaction.execute()
    return redis.get(key), script(keys=[key], args=[5]), replies, both, redis.set(key, 0, nx=True), redis.exists(key)


def test_redis_commands_scripts_and_pipelines_run_on_the_loop_with_the_blocking_clients_replies():
    seen: dict[str, Any] = {}

    def admission(key: str) -> tuple[Any, ...]:
        seen["thread"], seen["active"] = threading.get_ident(), on_loop.active()
        return _redis_work(key)

    loop_thread, on_the_loop = _on_loop(admission, f"crewdesk:test:on-loop:{uuid4().hex}")
    assert seen == {"thread": loop_thread, "active": True}
    blocking = _redis_work(f"crewdesk:test:on-loop:{uuid4().hex}")  # the same work off the loop
    assert not on_loop.active()
    assert on_the_loop == blocking == ("2", 7, [2, True, "2"], ["2", None], None, 1)


def test_a_redis_wait_lets_the_loop_serve_other_requests_meanwhile():
    key = f"crewdesk:test:on-loop:{uuid4().hex}"

    async def main() -> tuple[list[float], float]:
        ticks: list[float] = []

        async def other_request() -> None:
            for _ in range(50):
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        other = asyncio.create_task(other_request())
        await asyncio.sleep(0)
        await on_loop.run(lambda: get_redis().blpop([key], timeout=0.5))  # Redis answers after half a second
        waited_until = time.monotonic()
        other.cancel()
        return ticks, waited_until

    ticks, waited_until = _run(main())
    # A blocking wait would have held the loop: the other request could not have ticked until it ended.
    assert sum(1 for tick in ticks if tick < waited_until) >= 5


@pytest.mark.django_db(transaction=True)
def test_a_database_step_hops_to_a_thread_and_the_orm_on_the_loop_is_refused(monkeypatch):
    user_model = get_user_model()
    user_model.objects.create_user(email=f"{uuid4().hex}@example.com", password=uuid4().hex)

    def step() -> tuple[int, bool, int]:
        try:
            return threading.get_ident(), on_loop.active(), user_model.objects.count()
        finally:
            connection.close()  # the hop's thread is not the test's: its connection would outlive the test

    loop_thread, (thread, active_there, count) = _on_loop(lambda: on_loop.blocking(step))
    assert thread != loop_thread and active_there is False  # the hop's thread blocks as usual
    assert count == user_model.objects.count() >= 1
    assert on_loop.blocking(step)[0] == threading.get_ident()  # off the loop: called as it is

    monkeypatch.delenv("DJANGO_ALLOW_ASYNC_UNSAFE", raising=False)  # the browser tests set it for this process
    with pytest.raises(SynchronousOnlyOperation):
        _on_loop(user_model.objects.count)
