"""Rate limits: fixed-window counters in Redis through `limits`, with one 429 for everything that is limited.

A Bucket is one counter: a group ("api:key"), the value it counts per (the key's id) and a rate in limits'
notation ("600/minute", "10 per hour", "100/15 minutes"). Each hit is one round trip (an atomic INCR and
EXPIRE script); the window's reset time is read only for a request that is refused.
"""

import time
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest
from limits import RateLimitItem, parse
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter

from saas.core.errors import ApplicationError
from saas.core.redis import delete_matching, get_redis


@dataclass(frozen=True)
class Bucket:
    group: str
    value: str
    rate: str


class RateLimited(ApplicationError):
    """A 429 with Retry-After and the RateLimit headers of the IETF draft (draft-ietf-httpapi-ratelimit-headers,
    the -06 fields that clients read): the bucket's quota and window, nothing left, and when the window resets."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, limit: str, quota: int = 0, window: int = 0,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(message, details={"retry_after": retry_after, "limit": limit}, **kwargs)
        self.retry_after = retry_after
        self.headers: dict[str, str] = {}
        if quota:
            self.headers = {"RateLimit-Limit": str(quota), "RateLimit-Remaining": "0",
                            "RateLimit-Reset": str(retry_after), "RateLimit-Policy": f"{quota};w={window}"}  # fmt: skip


@cache
def parse_rate(rate: str) -> RateLimitItem:
    try:
        return parse(rate)
    except ValueError as exc:
        raise ImproperlyConfigured(f"Invalid rate limit {rate!r}: use e.g. '600/minute' or '10 per hour'.") from exc


def _prefix() -> str:
    return f"{settings.CACHES['default'].get('KEY_PREFIX', 'crewdesk')}:ratelimit"


@cache
def _limiter() -> FixedWindowRateLimiter:
    storage = RedisStorage(settings.REDIS_URL, connection_pool=get_redis().connection_pool, key_prefix=_prefix())
    return FixedWindowRateLimiter(storage)


def enforce_rate_limits(request: HttpRequest | None, buckets: list[Bucket]) -> None:
    """Count this request (or attempt) in every bucket; raise RateLimited for the first one over its rate."""
    limiter = _limiter()
    for bucket in buckets:
        item = parse_rate(bucket.rate)
        if not limiter.hit(item, bucket.group, bucket.value):
            reset_at, _ = limiter.get_window_stats(item, bucket.group, bucket.value)
            retry_after = max(1, int(reset_at - time.time()) + 1)
            raise RateLimited(
                f"Too many requests ({bucket.group.split(':', 1)[-1]} limit {bucket.rate}); retry in {retry_after}s.",
                retry_after=retry_after,
                limit=f"{bucket.group} {bucket.rate}",
                quota=item.amount,
                window=item.get_expiry(),
            )


def counters_forget(value: str) -> int:
    """Deletes the counters kept for a value (an org's or a person's id) in every group: an erasure leaves none."""
    # limits names a counter "<prefix>:LIMITER/<group>/<value>/<amount>/<multiples>/<granularity>".
    return delete_matching(f"{_prefix()}:LIMITER/*/{value}/*", limit=10_000)
