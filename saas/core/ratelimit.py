"""Rate limits: fixed-window counters in Redis, with one 429 for everything that is limited.

A Bucket is one counter: a group ("api:key"), the value it counts per (the key's id) and a rate in limits'
notation ("600/minute", "10 per hour", "100/15 minutes"). A request's buckets are counted in one round trip:
one script counts them in order, exactly as `limits`' fixed window does (the same keys, INCR and EXPIRE), and
stops at the first one over its rate, so a request the key's bucket refuses is not counted against the org's;
it also returns the refusing window's time to live, for Retry-After.
"""

from collections.abc import Callable
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


# KEYS: the buckets' counters, the memo version keys of the request (saas.core.memo.check_versions), then the
# companion's keys. ARGV: the numbers of buckets, version keys, companion keys and companion args; each bucket's
# window (seconds) and allowance in turn; each version key's expected value ('*': any); the companion's args.
# Returns {0, 0, versions..., companion's reply...}, or {i, ttl, versions...} for the (1-based) bucket i over its
# rate with the seconds left in its window, or {-1, 0, versions...} when a version differs from the one expected:
# then nothing was counted. A version never written reads as ''. The companion runs only when every bucket
# allowed the request.
_HIT = """
local companion = function(KEYS, ARGV)
%s
end
local buckets, nversions, ckeys, cargs = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local versions, stale = {}, false
for j = 1, nversions do
    local version = redis.call('GET', KEYS[buckets + j]) or ''
    versions[j] = version
    local expected = ARGV[4 + 2 * buckets + j]
    if expected ~= '*' and expected ~= version then stale = true end
end
if stale then return {-1, 0, unpack(versions)} end
for i = 1, buckets do
    local key = KEYS[i]
    local current = redis.call('INCRBY', key, 1)
    if current == 1 then redis.call('EXPIRE', key, ARGV[4 + 2 * i - 1]) end
    if current > tonumber(ARGV[4 + 2 * i]) then return {i, redis.call('TTL', key), unpack(versions)} end
end
local reply = {0, 0, unpack(versions)}
if ckeys + cargs > 0 then
    local first_key, first_arg = buckets + nversions + 1, 4 + 2 * buckets + nversions + 1
    for _, value in ipairs(companion({unpack(KEYS, first_key, first_key + ckeys - 1)},
                                     {unpack(ARGV, first_arg, first_arg + cargs - 1)})) do
        reply[#reply + 1] = value
    end
end
return reply
"""


@dataclass(frozen=True)
class Companion:
    """Work a view's rate-limit round trip carries for it (OrgScopedMixin.rate_limit_companion), run in the same
    script once every bucket allowed the request: `lua` is the body of a Lua function of its own KEYS and ARGV
    (`keys`, `args`) returning a table, which `done` receives. Not run (and `done` not called) for a request
    that is refused or finds a memo copy stale."""

    lua: str
    keys: list[str]
    args: list[Any]
    done: Callable[[list[Any]], None]


@cache
def _limiter(companion_lua: str = "return {}") -> Any:
    """The counting script (sent once, then run by its digest), on our Redis client: one per companion."""
    return get_redis().register_script(_HIT % companion_lua)


def enforce_rate_limits(request: HttpRequest | None, buckets: list[Bucket], companion: Companion | None = None) -> None:
    """Count this request (or attempt) in every bucket, in order; raise RateLimited for the first one over its
    rate (the buckets after it are not counted). Inside a memo block, the same round trip reads the memos'
    versions and checks the ones assumed: memo.Stale, and nothing counted, when one was out of date. A
    `companion` runs in the same round trip when the request is allowed."""
    if not buckets:
        return
    items = [parse_rate(bucket.rate) for bucket in buckets]
    prefix = _prefix()
    keys = [f"{prefix}:{item.key_for(b.group, b.value)}" for b, item in zip(buckets, items, strict=True)]
    args = [value for item in items for value in (item.get_expiry(), item.amount)]
    version_keys, expected = memo.check_versions()
    extra_keys, extra_args = (companion.keys, companion.args) if companion else ([], [])
    script = _limiter(companion.lua) if companion else _limiter()
    reply = script(keys=[*keys, *version_keys, *extra_keys],
                   args=[len(keys), len(version_keys), len(extra_keys), len(extra_args), *args,
                         *("" if v is None else v for v in expected), *extra_args])  # fmt: skip
    over, ttl = reply[0], reply[1]
    versions, answer = reply[2 : 2 + len(version_keys)], reply[2 + len(version_keys) :]
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
    if companion is not None:
        companion.done(answer)


def counters_forget(value: str) -> int:
    """Deletes the counters kept for a value (an org's or a person's id) in every group: an erasure leaves none."""
    # limits names a counter "<prefix>:LIMITER/<group>/<value>/<amount>/<multiples>/<granularity>".
    return delete_matching(f"{_prefix()}:LIMITER/*/{value}/*", limit=10_000)
