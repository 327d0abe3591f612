from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class CoreConfig(AppConfig):
    name = "saas.core"
    label = "core"
    verbose_name = "Crewdesk core"

    def ready(self) -> None:
        from saas.core import checks  # noqa: F401  (registers the checks)
        from saas.core.threads import register_metrics

        register_metrics()
        from saas.core.worker_metrics import register_queue_length

        register_queue_length()  # crewdesk_celery_queue_length on /metrics, read from the broker at scrape
        from saas.core.privacy import register_notice

        register_notice("Error reports", _errors_notice)
        register_notice("Email", _email_notice)


class CrewdeskAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with our site: our apps first, dj-stripe's mirror last (saas/core/admin.py)."""

    default = False  # named in INSTALLED_APPS; "saas.core" stays CoreConfig
    default_site = "saas.core.admin.CrewdeskAdminSite"


def _errors_notice() -> str:
    from django.conf import settings

    if not settings.SENTRY_DSN:
        return "Error reports stay on this server (its logs); nothing is sent to an error-tracking service."
    return (
        "Errors are reported to Sentry with the request's path and id, never with prompts, documents or "
        "personal data (send_default_pii is off)."
    )


def _email_notice() -> str:
    from django.conf import settings

    host = getattr(settings, "EMAIL_HOST", "") if settings.EMAIL_BACKEND.endswith("smtp.EmailBackend") else ""
    where = f"through the mail server {host}" if host else "by this server's configured email backend"
    return f"Invitations, notifications and export links are sent to your email address {where}."
