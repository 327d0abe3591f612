"""The Celery app: configured from Django settings (CELERY_*), tasks discovered in every installed app."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings.local")

app = Celery("crewdesk")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.beat_init.connect
def _beat_started(**_: object) -> None:
    # readyz can tell a scheduler that just started from one that never did.
    from saas.core.tasks import beat_heartbeat

    beat_heartbeat.run()
