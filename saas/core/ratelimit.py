"""Rate limits on the Redis cache through django-ratelimit, with one 429 for everything that is limited.

A Bucket is one counter: a group ("api:key"), the value it counts per (the key's id) and a rate ("600/m").
"""

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest
from django_ratelimit.core import get_usage

from saas.core.errors import ApplicationError


@dataclass(frozen=True)
class Bucket:
    group: str
    value: str
    rate: str


class RateLimited(ApplicationError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, limit: str, **kwargs: Any) -> None:
        super().__init__(message, details={"retry_after": retry_after, "limit": limit}, **kwargs)
        self.retry_after = retry_after


def enforce_rate_limits(request: HttpRequest, buckets: list[Bucket]) -> None:
    """Count this request in every bucket; raise RateLimited for the first one over its rate."""
    for bucket in buckets:
        usage = get_usage(
            request,
            group=bucket.group,
            key=lambda _group, _request, value=bucket.value: value,
            rate=bucket.rate,
            increment=True,
        )
        if usage is not None and usage["should_limit"]:
            retry_after = max(1, int(usage["time_left"]))
            raise RateLimited(
                f"Too many requests ({bucket.group.split(':')[-1]} limit {bucket.rate}); retry in {retry_after}s.",
                retry_after=retry_after,
                limit=f"{bucket.group} {bucket.rate}",
            )
