"""Worker metrics: a real Celery worker (prefork, two children) runs tasks; its exporter port shows the counts
and durations of every child, the queue depth, behind the metrics token. The web's /metrics shows the queue."""

import re
import time
import urllib.error
import urllib.request
import uuid

import pytest
from django.test import override_settings

from saas.core import worker_metrics
from saas.core.redis import get_redis
from tests.conftest import BIN_DIR, free_port, start_process, subprocess_env, wait_until

TOKEN = "worker-metrics-token-0123456789"


def _scrape(url: str, token: str | None = TOKEN) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _value(text: str, name: str, **labels: str) -> float:
    """The sample `name{labels...}` of a scrape (labels in any order), summed over the rest of its labels."""
    total, found = 0.0, False
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if not match:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if all(have.get(k) == v for k, v in labels.items()):
            total, found = total + float(match.group(2)), True
    assert found, f"no {name} {labels} in the scrape:\n{text[:3000]}"
    return total


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_exports_its_task_counts_durations_and_the_queue(tmp_path):
    from saas.celery import app

    queue = f"crewdesk-metrics-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = subprocess_env(WORKER_METRICS_PORT=str(port), WORKER_METRICS_ADDRESS="127.0.0.1", METRICS_TOKEN=TOKEN)
    worker = start_process(
        [str(BIN_DIR / "celery"), "-A", "saas", "worker", "--pool", "prefork", "--concurrency", "2",
         "--without-gossip", "--without-mingle", "--loglevel", "INFO", "--hostname", f"{queue}@%h",
         "--queues", queue],
        tmp_path / "worker.log", env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_until(lambda: _scrape(url)[0] == 200, timeout=90, what="worker metrics exporter", process=worker)
        assert _scrape(url, token=None)[0] == 401
        assert _scrape(url, token="wrong")[0] == 401

        results = [app.send_task("core.ping", queue=queue) for _ in range(4)]
        assert all(result.get(timeout=60)["pong"] for result in results)
        failed = app.send_task("core.ping", args=["unexpected"], queue=queue)
        with pytest.raises(TypeError):
            failed.get(timeout=60)

        def counted() -> bool:
            text = _scrape(url)[1]
            return ('state="failed"' in text and
                    _value(text, "crewdesk_celery_tasks_total", task="core.ping", state="succeeded") == 4)  # fmt: skip

        wait_until(counted, timeout=30, what="the counts on the scrape", process=worker)
        text = _scrape(url)[1]
        assert _value(text, "crewdesk_celery_tasks_total", task="core.ping", state="failed") == 1
        assert _value(text, "crewdesk_celery_task_duration_seconds_count", task="core.ping") == 5
        assert _value(text, "crewdesk_celery_task_duration_seconds_bucket", task="core.ping", le="+Inf") == 5
        assert _value(text, "crewdesk_celery_queue_length", queue="crewdesk-test") >= 0
    finally:
        worker.stop()
    assert "metrics on http://127.0.0.1" in worker.log()


@pytest.mark.django_db
def test_queue_length_is_read_from_the_broker_lists_with_their_priorities():
    queue = f"crewdesk-depth-{uuid.uuid4().hex[:8]}"
    redis = get_redis()
    try:
        redis.rpush(queue, "a", "b", "c")
        redis.rpush(f"{queue}\x06\x163", "d")  # kombu's list for priority 3
        collector = worker_metrics.QueueLengthCollector(lambda: [queue, queue + "-empty"])
        (family,) = list(collector.collect())
        samples = {sample.labels["queue"]: sample.value for sample in family.samples}
        assert family.name == "crewdesk_celery_queue_length"
        assert samples == {queue: 4, queue + "-empty": 0}
    finally:
        redis.delete(queue, f"{queue}\x06\x163")


@pytest.mark.django_db
@override_settings(METRICS_TOKEN=TOKEN, METRICS_PUBLIC=False)
def test_the_web_metrics_show_the_queue_and_stay_behind_the_token(client):
    assert client.get("/metrics").status_code == 401
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert 'crewdesk_celery_queue_length{queue="crewdesk-test"}' in response.content.decode()


@pytest.mark.django_db
@override_settings(METRICS_TOKEN="", METRICS_PUBLIC=False)
def test_without_a_token_metrics_are_not_there_in_production(client):
    assert client.get("/metrics").status_code == 404
    assert worker_metrics.refused("") == ("404 Not Found", "Not found.")


def test_only_celery_worker_and_beat_processes_export_on_a_port():
    assert worker_metrics.serving_process(["/venv/bin/celery", "-A", "saas", "worker", "-Q", "x"]) == "worker"
    assert worker_metrics.serving_process(["celery", "-A", "saas", "beat"]) == "beat"
    assert worker_metrics.serving_process(["daphne", "saas.asgi:application"]) is None
    assert worker_metrics.serving_process(["/venv/bin/pytest", "worker"]) is None


def test_durations_are_observed_by_task_name():
    tasks, duration = worker_metrics._metrics()
    name = f"test.task.{uuid.uuid4().hex[:6]}"

    class Task:
        pass

    task = Task()
    task.name = name  # type: ignore[attr-defined]
    worker_metrics._on_prerun(task_id="t1")
    time.sleep(0.01)
    worker_metrics._on_postrun(sender=task, task_id="t1", task=task, state="RETRY")
    assert tasks.labels(task=name, state="retried")._value.get() == 1
    assert duration.labels(task=name)._sum.get() > 0
