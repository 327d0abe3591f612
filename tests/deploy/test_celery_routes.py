"""Celery routes tasks to the queues deploy/k8s has a worker Deployment for: ingestion, crews and default."""

import importlib
import shlex
from contextlib import suppress

import yaml
from celery import Celery
from django.apps import apps

from saas import devstack
from saas.celery import app
from saas.settings import base
from tests.deploy.conftest import BASE_DIR

EXPECTED = {"documents.ingest_document": "ingestion", "agents.run_crew": "crews"}  # everything else: default


def _route(name: str) -> str:
    """The queue the production settings send a task to, through Celery's own router."""
    probe = Celery("route-probe", set_as_current=False)
    probe.conf.task_routes = base.CELERY_TASK_ROUTES
    probe.conf.task_default_queue = base.CELERY_TASK_DEFAULT_QUEUE
    return str(probe.amqp.router.route({}, name)["queue"].name)


def _our_tasks() -> list[str]:
    for config in apps.get_app_configs():  # what autodiscover_tasks imports
        with suppress(ModuleNotFoundError):
            importlib.import_module(f"{config.name}.tasks")
    return sorted(name for name in app.tasks if not name.startswith("celery."))


def _manifest_queues() -> dict[str, str]:
    """{queue: Deployment} from the base's worker Deployments."""
    queues = {}
    for path in (BASE_DIR / "deploy" / "k8s" / "base").glob("worker-*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] == "Deployment":
                command = doc["spec"]["template"]["spec"]["containers"][0]["command"]
                for queue in command[command.index("--queues") + 1].split(","):
                    queues[queue] = doc["metadata"]["name"]
    return queues


def test_each_task_routes_where_the_manifests_expect():
    tasks = _our_tasks()
    assert set(EXPECTED) <= set(tasks) and len(tasks) >= 10
    queues = _manifest_queues()
    assert set(queues) == {"ingestion", "crews", "default"}
    for name in tasks:
        queue = _route(name)
        assert queue == EXPECTED.get(name, "default"), name
        assert queue in queues, f"{name} goes to {queue}, which no worker Deployment consumes"
    assert queues["ingestion"] == "crewdesk-worker-ingestion" and queues["crews"] == "crewdesk-worker-crews"


def test_no_route_names_a_task_that_does_not_exist():
    assert set(base.CELERY_TASK_ROUTES) <= set(_our_tasks())


def test_make_run_and_compose_workers_consume_every_queue():
    queues = set(_manifest_queues())
    assert set(devstack.WORKER_QUEUES.split(",")) == queues
    compose = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())
    command = compose["services"]["worker"]["command"]
    command = shlex.split(command) if isinstance(command, str) else command
    assert set(command[command.index("--queues") + 1].split(",")) == queues
