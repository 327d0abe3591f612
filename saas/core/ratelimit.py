"""Rate limits: fixed-window counters in Redis, with one 429 for everything that is limited.

A Bucket is one counter: a group ("api:key"), the value it counts per (the key's id) and a rate in limits'
notation ("600/minute", "10 per hour", "100/15 minutes"). A request's buckets are counted in one round trip:
one script counts them in order, exactly as `limits`' fixed window does (the same keys, INCR and EXPIRE), and
stops at the first one over its rate, so a request the key's bucket refuses is not counted against the org's;
it also returns the refusing window's time to live, for Retry-After.
"""

from dataclasses import dataclass
from functools import cache
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest
from limits import RateLimitItem, parse

from saas.core import memo
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


# KEYS: the buckets' counters, then the memo version keys of the request (saas.core.memo.check_versions); ARGV:
# each bucket's window (seconds) and allowance in turn, then each version key's expected value ('*': any), then
# the number of buckets. Returns {0, 0, versions...}, or the (1-based) bucket that is over its rate and the
# seconds left in its window, or {-1, 0, versions...} when a version differs from the one expected: then nothing
# was counted. A version never written reads as ''.
_HIT = """
local buckets = tonumber(ARGV[#ARGV])
local versions, stale = {}, false
for j = buckets + 1, #KEYS do
    local version = redis.call('GET', KEYS[j]) or ''
    local expected = ARGV[buckets + j]
    versions[#versions + 1] = version
    if expected ~= '*' and expected ~= version then stale = true end
end
if stale then return {-1, 0, unpack(versions)} end
for i = 1, buckets do
    local key = KEYS[i]
    local current = redis.call('INCRBY', key, 1)
    if current == 1 then redis.call('EXPIRE', key, ARGV[2 * i - 1]) end
    if current > tonumber(ARGV[2 * i]) then return {i, redis.call('TTL', key), unpack(versions)} end
end
return {0, 0, unpack(versions)}
"""


@cache
def _limiter() -> Any:
    """The counting script (sent once, then run by its digest), on our Redis client."""
    return get_redis().register_script(_HIT)


def enforce_rate_limits(request: HttpRequest | None, buckets: list[Bucket]) -> None:
    """Count this request (or attempt) in every bucket, in order; raise RateLimited for the first one over its
    rate (the buckets after it are not counted). Inside a memo block, the same round trip reads the memos'
    versions and checks the ones assumed: memo.Stale, and nothing counted, when one was out of date."""
    if not buckets:
        return
    items = [parse_rate(bucket.rate) for bucket in buckets]
    prefix = _prefix()
    keys = [f"{prefix}:{item.key_for(b.group, b.value)}" for b, item in zip(buckets, items, strict=True)]
    args = [value for item in items for value in (item.get_expiry(), item.amount)]
    version_keys, expected = memo.check_versions()
    reply = _limiter()(keys=[*keys, *version_keys], args=[*args, *("" if v is None else v for v in expected),
                                                          len(keys)])  # fmt: skip
    over, ttl, versions = reply[0], reply[1], reply[2:]
    if version_keys:
        memo.versions_read(version_keys, [v if v != "" else None for v in versions])  # may raise Stale
    if over < 0:
        raise memo.Stale("the rate-limit script found a memo version changed")
    if over:
        bucket, item = buckets[int(over) - 1], items[int(over) - 1]
        retry_after = max(1, int(ttl))
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
