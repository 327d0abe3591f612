"""A run's live events, from the worker that runs it to every reader (the run page's websocket, the API's SSE).

Events go through Redis pub/sub on one channel per run: `step` (a recorded RunStep, with its `seq`), `token`
(a piece of the model's answer in progress, not stored) and `status` (the run changed state; the last one of
a finished run ends the stream). Readers first subscribe, then replay the recorded steps from the database,
then skip live steps they already replayed (by `seq`): nothing is missed in between, nothing is doubled.
"""

import json
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings

from saas.core.redis import get_redis


def channel(run_id: Any) -> str:
    return f"crewdesk:run-events:{run_id}"


def publish(run_id: Any, event: dict[str, Any]) -> None:
    with suppress(redis.RedisError):  # a lost live event must not fail the run: the steps are in the database
        get_redis().publish(channel(run_id), json.dumps(event, default=str))  # the process's shared client


class Subscription:
    """Subscribed on creation (before the caller replays the database); `events()` then yields each event,
    or None after `idle_timeout` seconds without one (a chance to send a keep-alive or check the run)."""

    def __init__(self, run_id: Any) -> None:
        self._client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=30)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(channel(run_id))

    def events(self, *, idle_timeout: float = 1.0) -> Iterator[dict[str, Any] | None]:
        while True:
            message = self._pubsub.get_message(timeout=idle_timeout)
            yield json.loads(message["data"]) if message else None

    def close(self) -> None:
        self._pubsub.close()
        self._client.close()


class AsyncSubscription:
    def __init__(self, run_id: Any) -> None:
        self.run_id = run_id
        self._client = aioredis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=30)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)

    async def start(self) -> None:
        await self._pubsub.subscribe(channel(self.run_id))

    async def next_event(self, *, idle_timeout: float) -> dict[str, Any] | None:
        message = await self._pubsub.get_message(timeout=idle_timeout)
        return json.loads(message["data"]) if message else None

    async def close(self) -> None:
        await self._pubsub.aclose()
        await self._client.aclose()
