"""Sentry is switched on by SENTRY_DSN alone; without it nothing is initialised and nothing leaves here."""


def init(*, dsn: str, environment: str, traces_sample_rate: float) -> bool:
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.integrations.redis import RedisIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        traces_sample_rate=traces_sample_rate,
        send_default_pii=False,  # prompts and documents are customer data: never ship them by default
        integrations=[DjangoIntegration(), CeleryIntegration(monitor_beat_tasks=True), RedisIntegration()],
    )
    return True
