import os
import socket
import time
from typing import Any

from celery import shared_task
from django_guid import get_guid

from saas.core.health import BEAT_HEARTBEAT_KEY
from saas.core.redis import get_redis


@shared_task(name="core.ping")
def ping() -> dict[str, Any]:
    """Diagnostics: proves a worker picks up tasks, and shows the request id it inherited."""
    return {"pong": True, "request_id": get_guid(), "pid": os.getpid(), "host": socket.gethostname()}


@shared_task(name="core.beat_heartbeat", ignore_result=True)
def beat_heartbeat() -> None:
    """Scheduled by beat; readyz reports how long ago it last ran."""
    get_redis().set(BEAT_HEARTBEAT_KEY, time.time(), ex=3600)
