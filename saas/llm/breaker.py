"""A circuit breaker per upstream, its state in Redis so that every web and worker process sees it.

closed: calls go through; each retryable failure counts in a sliding window. At `failure_threshold` failures
within `window` seconds the circuit opens for `cooldown` seconds: calls fail fast (CircuitOpen, which the
router treats as retryable, so the fallback chain moves on). After the cooldown one probe call is let
through (half-open); its success closes the circuit, its failure opens it again.

A process that found an upstream's circuit closed with no failure on record trusts that reading for
LLM_BREAKER["clean_read_seconds"] (1 s) instead of asking Redis before every call (a round trip per call, about a
twentieth of the gateway's CPU). Its own failures drop the reading at once; a circuit another process opened is
seen here within that second, so each process sends at most that second's calls to an upstream that just failed
(each one recorded, and a failure here ends the trust).
"""

import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from saas.core.redis import get_async_redis, get_redis

PREFIX = "crewdesk:llm:breaker"


def _keys(upstream: str) -> tuple[str, str, str]:
    return f"{PREFIX}:{upstream}:failures", f"{PREFIX}:{upstream}:open_until", f"{PREFIX}:{upstream}:probe"


# upstream -> time.monotonic() until which a clean reading of its circuit is trusted in this process
_clean_until: dict[str, float] = {}


def _trusted(upstream: str) -> "Permit | None":
    until = _clean_until.get(upstream)
    return Permit(upstream, clean=True) if until is not None and time.monotonic() < until else None


def _remember(decision: "Permit | str | None") -> None:
    if isinstance(decision, Permit) and decision.clean:
        _clean_until[decision.upstream] = time.monotonic() + float(settings.LLM_BREAKER.get("clean_read_seconds", 1))


def forget_local() -> None:
    """Drop every reading this process trusts (tests, between cases)."""
    _clean_until.clear()


@dataclass(frozen=True)
class Permit:
    """Leave to call an upstream. `clean`: no failure, open circuit or probe was on record when it was given,
    so a success has nothing to reset (the common case costs one round trip to Redis, not two)."""

    upstream: str
    clean: bool


# The decisions are here once; `allow` / `record_*` run them on the blocking client, `aallow` / `arecord_*` on
# the asyncio one (the gateway's async path), with the same commands.


def _state_commands(pipe: Any, upstream: str) -> None:
    failures_key, open_key, probe_key = _keys(upstream)
    pipe.get(open_key)
    pipe.exists(failures_key, probe_key)


def _decide(upstream: str, open_until: Any, others: int) -> Permit | str | None:
    """A permit, None (open), or "probe" (half-open: try to become the one probe)."""
    if open_until is None:
        return Permit(upstream, clean=others == 0)
    if time.time() < float(open_until):
        return None
    return "probe"


def _probe_ttl() -> int:
    return int(settings.LLM_BREAKER["cooldown"]) or 1


def _failure_commands(pipe: Any, upstream: str, now: float) -> None:
    config = settings.LLM_BREAKER
    failures_key, _, probe_key = _keys(upstream)
    pipe.zadd(failures_key, {f"{now}:{time.monotonic_ns()}": now})
    pipe.zremrangebyscore(failures_key, 0, now - config["window"])
    pipe.zcard(failures_key)
    pipe.expire(failures_key, int(config["window"]) + 1)
    pipe.exists(probe_key)


def _opens(results: list[Any]) -> bool:
    _, _, count, _, half_open = results
    return bool(count >= settings.LLM_BREAKER["failure_threshold"] or half_open)


def _open_args(now: float) -> tuple[float, int]:
    cooldown = settings.LLM_BREAKER["cooldown"]
    return now + cooldown, int(cooldown) * 10 + 60


def allow(upstream: str) -> Permit | None:
    if (trusted := _trusted(upstream)) is not None:
        return trusted
    redis = get_redis()
    pipe = redis.pipeline(transaction=False)
    _state_commands(pipe, upstream)
    decision = _decide(upstream, *pipe.execute())
    _remember(decision)
    if decision != "probe":
        return decision  # type: ignore[return-value]
    # Half-open: exactly one caller across all processes gets to probe.
    if redis.set(_keys(upstream)[2], "1", nx=True, ex=_probe_ttl()):
        return Permit(upstream, clean=False)
    return None


def record_success(permit: Permit) -> None:
    if not permit.clean:
        get_redis().delete(*_keys(permit.upstream))


def record_failure(upstream: str) -> None:
    _clean_until.pop(upstream, None)
    _, open_key, probe_key = _keys(upstream)
    redis = get_redis()
    now = time.time()
    pipe = redis.pipeline()
    _failure_commands(pipe, upstream, now)
    if _opens(pipe.execute()):
        value, ttl = _open_args(now)
        redis.set(open_key, value, ex=ttl)
        redis.delete(probe_key)


async def aallow(upstream: str) -> Permit | None:
    if (trusted := _trusted(upstream)) is not None:
        return trusted
    redis = get_async_redis()
    pipe = redis.pipeline(transaction=False)
    _state_commands(pipe, upstream)
    decision = _decide(upstream, *(await pipe.execute()))
    _remember(decision)
    if decision != "probe":
        return decision  # type: ignore[return-value]
    if await redis.set(_keys(upstream)[2], "1", nx=True, ex=_probe_ttl()):
        return Permit(upstream, clean=False)
    return None


async def arecord_success(permit: Permit) -> None:
    if not permit.clean:
        await get_async_redis().delete(*_keys(permit.upstream))


async def arecord_failure(upstream: str) -> None:
    _clean_until.pop(upstream, None)
    _, open_key, probe_key = _keys(upstream)
    redis = get_async_redis()
    now = time.time()
    pipe = redis.pipeline()
    _failure_commands(pipe, upstream, now)
    if _opens(await pipe.execute()):
        value, ttl = _open_args(now)
        await redis.set(open_key, value, ex=ttl)
        await redis.delete(probe_key)


def state(upstream: str) -> str:
    open_until = get_redis().get(_keys(upstream)[1])
    if open_until is None:
        return "closed"
    return "open" if time.time() < float(open_until) else "half_open"
