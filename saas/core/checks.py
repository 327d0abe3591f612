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
