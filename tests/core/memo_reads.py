"""A Redis client for tests that counts the memo version reads (saas.core.memo) while passing them on."""

from typing import Any

from saas.core.redis import get_redis


class CountingRedis:
    """The real client, counting the version reads the memos send (monkeypatch it over memo.get_redis)."""

    def __init__(self) -> None:
        self.client = get_redis()
        self.sent: list[str] = []

    def get(self, key: str) -> Any:
        self.sent.append("GET")
        return self.client.get(key)

    def mget(self, keys: list[str]) -> Any:
        self.sent.append("MGET")
        return self.client.mget(keys)
