"""Celery's metrics, and everything else a worker or beat process records (the gateway's calls made by tasks
among them), for Prometheus.

    crewdesk_celery_tasks_total{task,state}         counter; state: succeeded | failed | retried
    crewdesk_celery_task_duration_seconds{task}      histogram of a task's run time (succeeded, failed or retried)
    crewdesk_celery_queue_length{queue}              gauge: messages waiting in the broker's list, read at scrape

Web processes keep their /metrics (saas/core/views.py, django-prometheus and the default registry); the queue
gauge is there too. A worker or beat process serves its own metrics on WORKER_METRICS_PORT (0, the default, is
off) at /metrics, behind the same METRICS_TOKEN / METRICS_PUBLIC rules as the web's. Why a port per worker
rather than one /metrics for all: in a cluster the workers are other pods, with no disk or memory shared with
the web; each is scraped where it runs (a PodMonitor or `prometheus.io/port`), and a worker that dies takes
nothing of the others' counts with it. Inside one worker, Celery's prefork children record into
prometheus_client's multiprocess files (PROMETHEUS_MULTIPROC_DIR; a private directory per worker when unset),
which the worker's exporter adds up. Dashboards sum over instances; the queue gauge, seen by every process that
exports it, is read with max by (queue).
"""

import hmac
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

logger = logging.getLogger(__name__)

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
PRIORITY_SEPARATOR = "\x06\x16"  # kombu's Redis transport: queue "q" at priority 3 is the list "q\x06\x163"
PRIORITY_STEPS = (3, 6, 9)


def serving_process(argv: list[str]) -> str | None:
    """ "worker" or "beat" when this process is `celery ... worker|beat` (the processes that export on a port)."""
    if not argv or not os.path.basename(argv[0]).startswith("celery"):
        return None
    return next((arg for arg in argv[1:] if arg in ("worker", "beat")), None)


def prepare(argv: list[str] | None = None) -> None:
    """Called first thing in saas/celery.py, before anything imports prometheus_client: a worker whose metrics
    are exported gets a fresh multiprocess directory of its own (left-over files of an earlier run would add
    their counts), so its prefork children's metrics reach its exporter."""
    kind = serving_process(sys.argv if argv is None else argv)
    if kind is None or not int(os.environ.get("WORKER_METRICS_PORT") or 0):
        return
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = fresh_multiprocess_dir(kind)


def fresh_multiprocess_dir(kind: str) -> str:
    """PROMETHEUS_MULTIPROC_DIR emptied (left-over files of an earlier run would add their counts), or a private
    directory when it is unset: where a group of processes (a worker's prefork children, the web processes of
    saas/core/http_server.py) record, for one exporter to add up."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return tempfile.mkdtemp(prefix=f"crewdesk-{kind}-metrics-")
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, exist_ok=True)
    return directory


# --- Task metrics --------------------------------------------------------------------------------------------


def _metrics() -> tuple[Any, Any]:
    from prometheus_client import Counter, Histogram

    global _TASKS, _DURATION
    if _TASKS is None:
        _TASKS = Counter("crewdesk_celery_tasks", "Celery tasks run, by outcome", ["task", "state"])
        _DURATION = Histogram("crewdesk_celery_task_duration_seconds", "Celery task run time", ["task"],
                              buckets=DURATION_BUCKETS)  # fmt: skip
    return _TASKS, _DURATION


_TASKS: Any = None
_DURATION: Any = None
_started: dict[str, float] = {}


def _task_name(sender: Any, task: Any = None) -> str:
    named = task if task is not None else sender
    return str(getattr(named, "name", None) or named or "unknown")


def _on_prerun(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.monotonic()


def _on_postrun(sender: Any = None, task_id: str | None = None, task: Any = None, state: str | None = None,
                **_: Any) -> None:  # fmt: skip
    tasks, duration = _metrics()
    name = _task_name(sender, task)
    started = _started.pop(task_id, None) if task_id else None
    if started is not None:
        duration.labels(task=name).observe(time.monotonic() - started)
    if state == "SUCCESS":
        tasks.labels(task=name, state="succeeded").inc()
    elif state == "RETRY":
        tasks.labels(task=name, state="retried").inc()
    # FAILURE is counted by task_failure, which also fires (in the parent) for a child killed by a hard limit.


def _on_failure(sender: Any = None, **_: Any) -> None:
    _metrics()[0].labels(task=_task_name(sender), state="failed").inc()


def _on_child_exit(pid: int | None = None, **_: Any) -> None:
    if pid and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def connect_task_signals() -> None:
    """Count every task this process runs (idempotent: signals are connected under fixed ids)."""
    from celery import signals

    _metrics()
    signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid="crewdesk-metrics-prerun")
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid="crewdesk-metrics-postrun")
    signals.task_failure.connect(_on_failure, weak=False, dispatch_uid="crewdesk-metrics-failure")
    signals.worker_process_shutdown.connect(_on_child_exit, weak=False, dispatch_uid="crewdesk-metrics-child")


# --- Queue length --------------------------------------------------------------------------------------------


def queue_names() -> list[str]:
    """The queues the app sends to: the default one and any named by routes or declared queues."""
    from django.conf import settings

    names = {getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", None) or "celery"}
    routes = getattr(settings, "CELERY_TASK_ROUTES", None) or {}
    if isinstance(routes, dict):
        names.update(r["queue"] for r in routes.values() if isinstance(r, dict) and r.get("queue"))
    for queue in getattr(settings, "CELERY_TASK_QUEUES", None) or ():
        names.add(getattr(queue, "name", None) or str(queue))
    return sorted(names)


class QueueLengthCollector:
    """crewdesk_celery_queue_length, read from the broker's Redis lists when scraped (one round trip)."""

    def __init__(self, queues: Callable[[], Iterable[str]] = queue_names) -> None:
        self._queues = queues
        self._client: Any = None
        self._lock = threading.Lock()

    def _redis(self) -> Any:
        with self._lock:
            if self._client is None:
                import redis
                from django.conf import settings

                self._client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2,
                                                    socket_connect_timeout=2)  # fmt: skip
            return self._client

    def describe(self) -> list[Any]:
        return []  # not known before a scrape; keeps registration from calling collect()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        gauge = GaugeMetricFamily(
            "crewdesk_celery_queue_length", "Messages waiting in a Celery queue", labels=["queue"]
        )
        queues = list(self._queues())
        try:
            pipeline = self._redis().pipeline(transaction=False)
            for queue in queues:
                pipeline.llen(queue)
                for step in PRIORITY_STEPS:
                    pipeline.llen(f"{queue}{PRIORITY_SEPARATOR}{step}")
            lengths = pipeline.execute()
        except Exception:  # a broker outage must not break the scrape of everything else
            logger.warning("queue length: the broker cannot be read", exc_info=True)
            return
        per_queue = 1 + len(PRIORITY_STEPS)
        for index, queue in enumerate(queues):
            gauge.add_metric([queue], sum(lengths[index * per_queue : (index + 1) * per_queue]))
        yield gauge


_queue_collector: QueueLengthCollector | None = None


def register_queue_length(registry: Any = None) -> None:
    """The queue gauge on a registry (the default one: the web's /metrics), once per process."""
    global _queue_collector
    from prometheus_client import REGISTRY

    if _queue_collector is None:
        _queue_collector = QueueLengthCollector()
        (registry or REGISTRY).register(_queue_collector)


# --- The worker's exporter -----------------------------------------------------------------------------------


def refused(authorization: str) -> tuple[str, str] | None:
    """The web's rules (saas/core/views.py metrics): None when allowed, else (status line, message)."""
    from django.conf import settings

    token = settings.METRICS_TOKEN
    if not token and not settings.METRICS_PUBLIC:
        return "404 Not Found", "Not found."
    if token and not hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode()):
        return "401 Unauthorized", "A valid metrics bearer token is required."
    return None


def exporter_registry() -> Any:
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(QueueLengthCollector())
    return registry


def wsgi_app(registry: Any) -> Callable[..., Any]:
    import json

    from prometheus_client import make_wsgi_app

    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") not in ("/metrics", "/"):
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [json.dumps({"error": {"code": "not_found", "message": "Not found."}}).encode()]
        refusal = refused(environ.get("HTTP_AUTHORIZATION", ""))
        if refusal is not None:
            status, message = refusal
            code = "not_found" if status.startswith("404") else "not_authenticated"
            headers = [("Content-Type", "application/json")]
            if code == "not_authenticated":
                headers.append(("WWW-Authenticate", 'Bearer realm="metrics"'))
            start_response(status, headers)
            return [json.dumps({"error": {"code": code, "message": message}}).encode()]
        return metrics_app(environ, start_response)  # type: ignore[no-any-return]

    return app


def start_exporter(port: int, address: str = "0.0.0.0") -> Any:  # noqa: S104 (scraped from other pods)
    """Serves /metrics from a daemon thread of the worker's main process; returns the server."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class _Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    class _Threaded(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    server = make_server(address, port, wsgi_app(exporter_registry()), server_class=_Threaded, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="metrics-exporter", daemon=True).start()
    logger.info("worker metrics on http://%s:%s/metrics", address, port)
    return server


def on_worker_ready(**_: Any) -> None:
    port = int(os.environ.get("WORKER_METRICS_PORT") or 0)
    if port:
        start_exporter(port, os.environ.get("WORKER_METRICS_ADDRESS", "0.0.0.0"))  # noqa: S104
