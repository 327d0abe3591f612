import json

import pytest

from tests.conftest import run_python, subprocess_env

READYZ_IN_A_FRESH_PROCESS = """
import django, json
django.setup()
from django.test import Client
response = Client().get("/readyz")
print(json.dumps({"status": response.status_code, "body": response.json()}))
"""


def test_healthz_answers_without_touching_the_database(client, monkeypatch):
    # No django_db mark: any database access raises. Nor may it run the readiness checks.
    monkeypatch.setattr("saas.core.views.readiness", lambda: pytest.fail("healthz ran the readiness checks"))
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_readyz_is_ok_when_every_component_is(client, celery_worker_process):
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    for name in ("database", "pgvector", "migrations", "redis", "celery"):
        assert body["components"][name]["ok"] is True, name
    assert body["components"]["pgvector"]["version"].startswith("0.8")
    assert any("test-worker" in w for w in body["components"]["celery"]["workers"])


@pytest.mark.django_db
def test_readyz_names_an_unreachable_database():
    env = subprocess_env(DATABASE_URL="postgresql://crewdesk@127.0.0.1:9/crewdesk", DATABASE_CONNECT_TIMEOUT="2")
    result = run_python(READYZ_IN_A_FRESH_PROCESS, env)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["status"] == 503
    body = outcome["body"]
    assert "database" in body["failing"]
    assert body["components"]["database"]["ok"] is False
    assert "Not ready: database" in body["error"]["message"]
    assert body["components"]["redis"]["ok"] is True  # only what is broken is named
    # A probe answers within seconds: the connection is waited for as long as the connect timeout (2 s here),
    # not the pool's queueing timeout (10 s), and the checks that read the database are not run at all.
    assert "after 2.00 sec" in body["components"]["database"]["detail"]
    assert body["components"]["llm_providers"] == {"ok": False, "detail": "skipped: the database is unreachable",
                                                   "required": False}  # fmt: skip


@pytest.mark.django_db
def test_readyz_names_an_unreachable_redis():
    env = subprocess_env(REDIS_URL="redis://127.0.0.1:9/0")
    result = run_python(READYZ_IN_A_FRESH_PROCESS, env)
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["status"] == 503
    assert outcome["body"]["failing"] == ["redis", "celery"]
    assert outcome["body"]["components"]["database"]["ok"] is True


@pytest.mark.django_db
def test_readyz_reports_pending_migrations(client, monkeypatch):
    from saas.core import health

    class PendingPlan:
        def __init__(self, connection):
            self.loader = type("Loader", (), {"graph": type("Graph", (), {"leaf_nodes": lambda self: []})()})()

        def migration_plan(self, targets):
            return [(type("M", (), {"app_label": "documents", "name": "0002_chunks"})(), False)]

    monkeypatch.setattr(health, "MigrationExecutor", PendingPlan)
    body = client.get("/readyz").json()
    assert body["components"]["migrations"] == {
        "ok": False,
        "detail": "1 pending migration(s)",
        "required": True,
        "pending": ["documents.0002_chunks"],
    }
    assert "migrations" in body["failing"]


def test_metrics_are_exported(client, settings):
    settings.METRICS_TOKEN, settings.METRICS_PUBLIC = "", True  # the local default
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"django_http_requests_total_by_view_transport_method_total" in response.content


def test_metrics_require_the_bearer_token_when_one_is_set(client, settings):
    settings.METRICS_TOKEN = "s3cret-token"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    denied = client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong")
    assert denied.json()["error"]["code"] == "not_authenticated"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token").status_code == 200


def test_metrics_are_closed_without_a_token_unless_opened_explicitly(client, settings):
    """Production's default (METRICS_PUBLIC=false): no token, no metrics; a token opens them to its holder."""
    settings.METRICS_TOKEN, settings.METRICS_PUBLIC = "", False
    response = client.get("/metrics")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert b"django_http" not in response.content
    settings.METRICS_TOKEN = "s3cret-token"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token").status_code == 200
    settings.METRICS_TOKEN, settings.METRICS_PUBLIC = "", True  # the explicit opt-out
    assert client.get("/metrics").status_code == 200
