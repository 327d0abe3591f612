import os
import socket
import time
from typing import Any

from celery import shared_task
from django.db import transaction
from django_guid import get_guid

from saas.core.health import BEAT_HEARTBEAT_KEY
from saas.core.redis import get_redis


def send_task_on_commit(name: str, *args: Any) -> None:
    """Queue a task by name once the transaction commits: the task's owner may be a layer above the caller."""
    from saas.celery import app

    transaction.on_commit(lambda: app.send_task(name, args=list(args)))


@shared_task(name="core.ping")
def ping() -> dict[str, Any]:
    """Diagnostics: proves a worker picks up tasks, and shows the request id it inherited."""
    return {"pong": True, "request_id": get_guid(), "pid": os.getpid(), "host": socket.gethostname()}


@shared_task(name="core.beat_heartbeat", ignore_result=True)
def beat_heartbeat() -> None:
    """Scheduled by beat; readyz reports how long ago it last ran."""
    get_redis().set(BEAT_HEARTBEAT_KEY, time.time(), ex=3600)
