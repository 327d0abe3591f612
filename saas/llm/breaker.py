"""A circuit breaker per upstream, its state in Redis so that every web and worker process sees it.

closed: calls go through; each retryable failure counts in a sliding window. At `failure_threshold` failures
within `window` seconds the circuit opens for `cooldown` seconds: calls fail fast (CircuitOpen, which the
router treats as retryable, so the fallback chain moves on). After the cooldown one probe call is let
through (half-open); its success closes the circuit, its failure opens it again.
"""

import time
from dataclasses import dataclass

from django.conf import settings

from saas.core.redis import get_redis

PREFIX = "crewdesk:llm:breaker"


def _keys(upstream: str) -> tuple[str, str, str]:
    return f"{PREFIX}:{upstream}:failures", f"{PREFIX}:{upstream}:open_until", f"{PREFIX}:{upstream}:probe"


@dataclass(frozen=True)
class Permit:
    """Leave to call an upstream. `clean`: no failure, open circuit or probe was on record when it was given,
    so a success has nothing to reset (the common case costs one round trip to Redis, not two)."""

    upstream: str
    clean: bool


def allow(upstream: str) -> Permit | None:
    failures_key, open_key, probe_key = _keys(upstream)
    redis = get_redis()
    pipe = redis.pipeline(transaction=False)
    pipe.get(open_key)
    pipe.exists(failures_key, probe_key)
    open_until, others = pipe.execute()
    if open_until is None:
        return Permit(upstream, clean=others == 0)
    if time.time() < float(open_until):
        return None
    # Half-open: exactly one caller across all processes gets to probe.
    if redis.set(probe_key, "1", nx=True, ex=int(settings.LLM_BREAKER["cooldown"]) or 1):
        return Permit(upstream, clean=False)
    return None


def record_success(permit: Permit) -> None:
    if not permit.clean:
        get_redis().delete(*_keys(permit.upstream))


def record_failure(upstream: str) -> None:
    config = settings.LLM_BREAKER
    failures_key, open_key, probe_key = _keys(upstream)
    redis = get_redis()
    now = time.time()
    pipe = redis.pipeline()
    pipe.zadd(failures_key, {f"{now}:{time.monotonic_ns()}": now})
    pipe.zremrangebyscore(failures_key, 0, now - config["window"])
    pipe.zcard(failures_key)
    pipe.expire(failures_key, int(config["window"]) + 1)
    _, _, count, _ = pipe.execute()
    half_open = redis.exists(probe_key)
    if count >= config["failure_threshold"] or half_open:
        redis.set(open_key, now + config["cooldown"], ex=int(config["cooldown"]) * 10 + 60)
        redis.delete(probe_key)


def state(upstream: str) -> str:
    open_until = get_redis().get(_keys(upstream)[1])
    if open_until is None:
        return "closed"
    return "open" if time.time() < float(open_until) else "half_open"
