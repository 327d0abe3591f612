"""The Celery app: configured from Django settings (CELERY_*), tasks discovered in every installed app."""

import os

from saas.core import worker_metrics

worker_metrics.prepare()  # before anything imports prometheus_client: a worker's children share its metrics

from celery import Celery, signals  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings.local")

app = Celery("crewdesk")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
worker_metrics.connect_task_signals()  # crewdesk_celery_tasks_total, crewdesk_celery_task_duration_seconds
signals.worker_ready.connect(worker_metrics.on_worker_ready, weak=False)  # its /metrics on WORKER_METRICS_PORT
signals.beat_init.connect(worker_metrics.on_worker_ready, weak=False)


@signals.beat_init.connect
def _beat_started(**_: object) -> None:
    # readyz can tell a scheduler that just started from one that never did.
    from saas.core.tasks import beat_heartbeat

    beat_heartbeat.run()


@signals.worker_init.connect
def _load_embedding_model(sender: object = None, **_: object) -> None:
    # Once per worker, in the parent before the prefork pool forks: the children share the loaded model (copy
    # on write) instead of each loading its own, and each takes its share of the cores for forward passes.
    from saas.llm import embeddings

    if os.environ.get("LOCAL_EMBEDDING_PRELOAD", "1") == "1":
        embeddings.preload()
    global _pool_processes
    _pool_processes = int(getattr(sender, "concurrency", 1) or 1)


_pool_processes = 1


@signals.worker_process_init.connect
def _share_embedding_cores(**_: object) -> None:
    from saas.llm import embeddings

    embeddings.share_cores(_pool_processes)
