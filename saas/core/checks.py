"""Startup checks of our own settings (run by `manage.py check`, `migrate` and every server start)."""

from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from saas.core.ratelimit import parse_rate


@checks.register()
def rate_limits_parse(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for name, rate in settings.RATE_LIMITS.items():
        try:
            parse_rate(rate)
        except ImproperlyConfigured as exc:
            errors.append(checks.Error(str(exc), hint=f"RATE_LIMITS[{name!r}]", id="crewdesk.E001"))
    for endpoint, rates in settings.ENDPOINT_RATE_LIMITS.items():
        for per, rate in rates.items():
            try:
                parse_rate(rate)
            except ImproperlyConfigured as exc:
                errors.append(checks.Error(str(exc), hint=f"RATE_LIMIT_{endpoint.upper()}_{per.upper()}",
                                           id="crewdesk.E001"))  # fmt: skip
    return errors


@checks.register()
def no_atomic_requests(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    """A request wrapped in one transaction holds its pooled connection until it ends, through every model call
    it waits on (saas/core/db.py): the pool would run dry under ordinary load."""
    from saas.core.db import atomic_requests_databases

    return [
        checks.Error(
            f"DATABASES[{alias!r}] has ATOMIC_REQUESTS: each request would hold a database connection while it "
            "waits on a model.",
            hint="Turn ATOMIC_REQUESTS off; services wrap their writes in transaction.atomic themselves.",
            id="crewdesk.E002",
        )
        for alias in atomic_requests_databases()
    ]
