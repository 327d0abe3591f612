"""Django's Redis cache with one connection pool per process.

Django keeps cache backends in a context-local, and under ASGI every request runs in a fresh context, so the
stock RedisCache builds a new client, pool and TCP connection for every request (and closes it at the end).
Here all backend instances of a process with the same servers and options share one client, whose
thread-safe pool keeps its connections open.
"""

import threading
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.utils.functional import cached_property

_clients: dict[str, RedisCacheClient] = {}
_lock = threading.Lock()


class SharedPoolRedisCache(RedisCache):
    # Set by RedisCache.__init__ (django-stubs does not declare them).
    _class: type[RedisCacheClient]
    _servers: list[str]
    _options: dict[str, Any]

    @cached_property
    def _cache(self) -> RedisCacheClient:
        identity = repr((self._servers, sorted(self._options.items())))
        with _lock:
            client = _clients.get(identity)
            if client is None:
                client = _clients[identity] = self._class(self._servers, **self._options)
        return client
