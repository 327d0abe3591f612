import os
import time
import uuid

import pytest
from django_guid import clear_guid, set_guid

from saas.core.tasks import ping

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def test_task_runs_in_a_real_worker_process_with_the_callers_request_id(celery_worker_process, settings):
    assert settings.CELERY_TASK_ALWAYS_EAGER is False
    request_id = uuid.uuid4().hex
    set_guid(request_id)
    try:
        result = ping.delay().get(timeout=30)
    finally:
        clear_guid()
    assert result["pong"] is True
    assert result["pid"] == celery_worker_process.process.pid  # solo pool: the worker process itself
    assert result["pid"] != os.getpid()
    assert result["request_id"] == request_id


def test_worker_log_lines_carry_the_request_id(celery_worker_process):
    request_id = uuid.uuid4().hex
    set_guid(request_id)
    try:
        async_result = ping.delay()
        async_result.get(timeout=30)
    finally:
        clear_guid()
    # The worker logs "succeeded" just after it stores the result: give the line a moment to land.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = [line for line in celery_worker_process.log().splitlines() if async_result.id in line]
        if any("succeeded" in line for line in lines):
            break
        time.sleep(0.2)
    assert any("succeeded" in line for line in lines), celery_worker_process.log()[-3000:]
    # Lines logged while the task runs carry the id (the broker consumer's "received" line precedes the task).
    assert all(f"[{request_id}]" in line for line in lines if "received" not in line), lines
