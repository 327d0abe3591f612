"""Shared fixtures. Live processes (a Celery worker, a daphne server) run as real subprocesses against the
same test database and Valkey as the test itself; tests using them need committed data (transactional_db)."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import connection

BASE_DIR = Path(__file__).resolve().parent.parent
BIN_DIR = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def subprocess_env(**overrides: str) -> dict[str, str]:
    """The environment of a child process that must see what this test session sees: the test database
    (pytest-django's test_<name>, not the dev one), the same Valkey, the test settings."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    database_url = urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "saas.settings.test",
        "DATABASE_URL": database_url,
        "PYTHONUNBUFFERED": "1",
        "WEB_PROCESSES": "1",  # one daphne process per live server unless a test asks for more
        "API_PROCESSES": "1",  # ... and one API server (uvicorn) process
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # the browser tests' workaround is for this process only
    env.update(overrides)
    return env


@dataclass
class LiveProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_process(args: list[str], log_path: Path, env: dict[str, str]) -> LiveProcess:
    log_file = log_path.open("wb")
    process = subprocess.Popen(args, cwd=BASE_DIR, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    return LiveProcess(process, log_path)


def wait_until(predicate, *, timeout: float, what: str, process: LiveProcess) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.process.poll() is not None:
            raise RuntimeError(f"{what} exited early:\n{process.log()[-4000:]}")
        with suppress(Exception):
            if predicate():
                return
        time.sleep(0.3)
    raise RuntimeError(f"{what} not ready after {timeout}s:\n{process.log()[-4000:]}")


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """Before the test database is made: dj-stripe's migration, written from its models (saas/settings/test.py),
    as `makemigrations djstripe` writes it but without touching a database (a connection opened here would keep
    its pool on the dev database once the test database is made)."""
    from django.apps import apps
    from django.conf import settings
    from django.db.migrations.autodetector import MigrationAutodetector
    from django.db.migrations.loader import MigrationLoader
    from django.db.migrations.questioner import NonInteractiveMigrationQuestioner
    from django.db.migrations.state import ProjectState
    from django.db.migrations.writer import MigrationWriter

    if "djstripe" not in getattr(settings, "MIGRATION_MODULES", {}):
        return
    loader = MigrationLoader(None, ignore_no_migrations=True)
    detector = MigrationAutodetector(loader.project_state(), ProjectState.from_apps(apps),
                                     NonInteractiveMigrationQuestioner(specified_apps={"djstripe"}))  # fmt: skip
    changes = detector.changes(graph=loader.graph, trim_to_apps={"djstripe"}, convert_apps={"djstripe"})
    for migration in changes.get("djstripe", []):
        writer = MigrationWriter(migration)
        Path(writer.path).write_text(writer.as_string())


@pytest.fixture(autouse=True)
def fresh_memos():
    """Rows read on every request are kept in memory (saas/core/memo.py). A test's rows vanish without
    signals (rollback, flush), so every test starts with no copy here and a new version for the live
    processes, as Django's test framework does with its ContentType cache."""
    from saas.core import memo
    from saas.llm import breaker

    memo.forget_all_local()
    breaker.forget_local()
    yield
    memo.forget_all_local()
    breaker.forget_local()


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    """Every test is a new client: counters of rate limits (ours and allauth's, all kept per 127.0.0.1 here)
    left by an earlier test never refuse this one's requests, e.g. the browser tests' sign-ins."""
    from django.conf import settings

    from saas.core.redis import delete_matching

    prefix = settings.CACHES["default"].get("KEY_PREFIX", "crewdesk")
    for pattern in (f"{prefix}:ratelimit:*", f"{prefix}:*allauth:rl:*"):
        while delete_matching(pattern, limit=10_000):
            pass
    yield


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[LiveProcess]:
    """A real `celery worker` process consuming the test queue on the test Valkey."""
    from saas.celery import app

    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    hostname = f"test-worker-{os.getpid()}@%h"
    worker = start_process(
        [
            str(BIN_DIR / "celery"),
            "-A",
            "saas",
            "worker",
            "--loglevel",
            "INFO",
            "--pool",
            "solo",
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            hostname,
            "--queues",
            "crewdesk-test",
        ],
        log_path,
        subprocess_env(),
    )

    def answers_ping() -> bool:
        return any(f"test-worker-{os.getpid()}@" in name for reply in app.control.ping(timeout=0.5) for name in reply)

    try:
        wait_until(answers_ping, timeout=180, what="celery worker", process=worker)
        yield worker
    finally:
        worker.stop()


@dataclass
class LiveServer:
    url: str
    host: str
    port: int
    process: LiveProcess
    mail_dir: Path
    kind: str = "daphne"  # or "api": saas.core.api_server (uvicorn)

    def sent_mail(self) -> list[str]:
        """The emails this server sent (file backend), oldest first."""
        return [p.read_text() for p in sorted(self.mail_dir.glob("*.log"), key=lambda p: p.stat().st_mtime)]


@pytest.fixture(scope="session")
def fake_server():
    """A fake OpenAI-compatible upstream on loopback (saas.llm.fake_upstream), shared by the session."""
    from saas.llm.fake_upstream import FakeUpstreamServer

    server = FakeUpstreamServer().start_in_thread()
    yield server
    server.shutdown()


@contextmanager
def running_daphne(
    work_dir: Path, fake_server: Any, *, server_kind: str = "daphne", **env: str
) -> Iterator[LiveServer]:
    """A real daphne serving saas.asgi (HTTP and websockets) on a free loopback port, with extra settings; with
    server_kind="api", the API server instead (uvicorn, saas.core.api_server: HTTP only)."""
    port = free_port()
    mail_dir = work_dir / "mail"
    mail_dir.mkdir()
    module = "saas.core.api_server" if server_kind == "api" else "saas.core.http_server"
    server = start_process(
        [sys.executable, "-m", module, "-b", "127.0.0.1", "-p", str(port), "saas.asgi:application"],
        work_dir / f"{server_kind}.log",
        subprocess_env(
            EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
            EMAIL_FILE_PATH=str(mail_dir),
            SITE_URL=f"http://127.0.0.1:{port}",
            LLM_OPENAI_BASE_URL=fake_server.base_url,
            LLM_OPENAI_API_KEY="sk-upstream-secret",
            LLM_BACKOFF_BASE="0.01",
            LLM_BACKOFF_MAX="0.05",
            **env,
        ),
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)

    try:
        wait_until(healthy, timeout=60, what=server_kind, process=server)
        yield LiveServer(url=url, host="127.0.0.1", port=port, process=server, mail_dir=mail_dir, kind=server_kind)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def daphne_server(django_db_setup, tmp_path_factory, fake_server) -> Iterator[LiveServer]:
    with running_daphne(tmp_path_factory.mktemp("daphne"), fake_server) as server:
        yield server


@pytest.fixture(scope="session")
def api_server(django_db_setup, tmp_path_factory, fake_server) -> Iterator[LiveServer]:
    """The API server (uvicorn, saas.core.api_server) as `make run` starts it, one process."""
    with running_daphne(tmp_path_factory.mktemp("api"), fake_server, server_kind="api") as server:
        yield server


def run_python(code: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a snippet in a fresh interpreter (for settings that must be read at startup)."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=timeout
    )
