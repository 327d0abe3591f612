"""The servers a benchmark compares, started the way an operator would start them, and measured from outside.

- the fake OpenAI-compatible upstream (saas.llm.fake_upstream, bounded state), one process;
- Crewdesk: `python -m saas.core.http_server` (daphne, as `make run` starts it) on the bench stack's real
  PostgreSQL and Valkey, with DEBUG off as in production, one process;
- LiteLLM proxy (`litellm[proxy]` from PyPI), installed on first use into its own venv (bench/.venv-litellm,
  never the project's), no database, one worker, pointed at the same fake upstream.

Each server is a `Server`: its processes' CPU time (user + system, children included), threads and RSS are read
from /proc through psutil, so a benchmark can divide CPU by calls.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

BASE_DIR = Path(__file__).resolve().parent.parent
LITELLM_VENV = Path(os.environ.get("BENCH_LITELLM_VENV") or BASE_DIR / "bench" / ".venv-litellm")
# The newest version whose `proxy` extra installs from PyPI here: 1.108.8 and later require `litellm-proxy==<same
# version>`, a package the registry does not have. A pinned version keeps runs comparable.
LITELLM_REQUIREMENT = os.environ.get("BENCH_LITELLM_REQUIREMENT", "litellm[proxy]==1.108.7")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 90, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=2):
                return
        except Exception:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not come up within {timeout:.0f} s")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def raise_fd_limit(needed: int) -> int:
    """Raise this process's open-file limit (inherited by the servers it starts) to at least `needed`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard == resource.RLIM_INFINITY else max(soft, min(hard, max(needed, soft)))
    if needed > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(target, needed), hard))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    extra: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def _processes(self) -> list[psutil.Process]:
        found: list[psutil.Process] = []
        for popen in (self.process, *self.extra):
            try:
                root = psutil.Process(popen.pid)
                found += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU of the server's processes (and their children) so far."""
        total = 0.0
        for proc in self._processes():
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def threads(self) -> int:
        return sum(p.num_threads() for p in self._processes() if p.is_running())

    def rss_mb(self) -> float:
        return sum(p.memory_info().rss for p in self._processes() if p.is_running()) / 1e6

    def pids(self) -> list[int]:
        return [p.pid for p in self._processes()]

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        for popen in (*self.extra, self.process):
            if popen.poll() is None:
                popen.terminate()
        for popen in (*self.extra, self.process):
            try:
                popen.wait(15)
            except subprocess.TimeoutExpired:
                popen.kill()


def _start(
    cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path = BASE_DIR
) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT)


def start_fake_upstream(workdir: Path, *, max_requests: int = 1000) -> Server:
    port = free_port()
    log = workdir / "fake_upstream.log"
    process = _start([sys.executable, "-m", "saas.llm.fake_upstream", "--port", str(port),
                      "--max-requests", str(max_requests)], log)  # fmt: skip
    server = Server("upstream", f"http://127.0.0.1:{port}", process, log)
    wait_http(server.url + "/v1/models")
    return server


def start_crewdesk(
    workdir: Path, upstream: Server, server: str = "api", *, tree: Path | str = BASE_DIR, **env: str
) -> Server:
    """Crewdesk's API server (uvicorn, saas.core.api_server) or, with server="daphne", daphne through its entry
    point (both as `make run` starts them), in the bench stack's environment, DEBUG off. `tree`: the checkout
    whose code it runs (another commit's, to compare against)."""
    port = free_port()
    log = workdir / "crewdesk.log"
    process_env = {
        **os.environ,
        "DEBUG": "false",
        # One process, as each side of a benchmark is one process (its CPU and threads are read from the pid);
        # `make run` starts WEB_PROCESSES daphne and API_PROCESSES uvicorn processes.
        "WEB_PROCESSES": "1",
        "API_PROCESSES": "1",
        "LLM_OPENAI_BASE_URL": upstream.url + "/v1",
        "LLM_OPENAI_API_KEY": "sk-bench",
        "RATE_LIMIT_API_KEY": "100000000/minute",
        "RATE_LIMIT_ORG": "100000000/minute",
        "RATE_LIMIT_USER": "100000000/minute",
        **{
            f"RATE_LIMIT_{e}_{p}": "100000000/minute"
            for e in ("CHAT_COMPLETIONS", "EMBEDDINGS")
            for p in ("ORG", "KEY")
        },
        **({"PGOPTIONS": os.environ["BENCH_PGOPTIONS"]} if os.environ.get("BENCH_PGOPTIONS") else {}),
        **env,
    }
    # BENCH_STEP_FILE: the server with bench/step_cpu.py's per-step CPU clocks (quick_cpu.py --steps).
    if env.get("BENCH_STEP_FILE"):
        entry = [str(Path(__file__).resolve().parent / "step_server.py"), *(["--daphne"] if server == "daphne" else [])]
    else:
        entry = ["-m", "saas.core.http_server" if server == "daphne" else "saas.core.api_server"]
    cmd = [sys.executable, *entry, "-b", "127.0.0.1", "-p", str(port), "saas.asgi:application"]
    crewdesk = Server("crewdesk", f"http://127.0.0.1:{port}", _start(cmd, log, process_env, cwd=Path(tree)), log)
    wait_http(crewdesk.url + "/healthz")
    return crewdesk


class LiteLLMUnavailable(Exception):
    pass


def litellm_binary(install: bool = True) -> Path:
    """The `litellm` CLI of the bench's own venv, installed there from PyPI on first use."""
    binary = LITELLM_VENV / "bin" / "litellm"
    if binary.exists():
        return binary
    if not install:
        raise LiteLLMUnavailable(f"not installed in {LITELLM_VENV} (--no-litellm-install)")
    print(f"Installing {LITELLM_REQUIREMENT} into {LITELLM_VENV} (first use; a few minutes) ...", flush=True)
    base_python = Path(getattr(sys, "_base_executable", sys.executable))
    try:
        if not (LITELLM_VENV / "bin" / "pip").exists():
            subprocess.run([str(base_python), "-m", "venv", str(LITELLM_VENV)], check=True)
        result = subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet", LITELLM_REQUIREMENT],
                                capture_output=True, text=True, timeout=1800)  # fmt: skip
    except (OSError, subprocess.SubprocessError) as error:
        raise LiteLLMUnavailable(f"could not create its venv or run pip: {error}") from error
    if result.returncode != 0 or not binary.exists():
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise LiteLLMUnavailable(f"`pip install {LITELLM_REQUIREMENT}` failed: {' | '.join(tail)}")
    return binary


def litellm_version() -> str:
    python = LITELLM_VENV / "bin" / "python"
    result = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                            capture_output=True, text=True)  # fmt: skip
    return result.stdout.strip() or "?"


LITELLM_KEY = "sk-litellm-bench"


def start_litellm(workdir: Path, upstream: Server, *, install: bool = True) -> Server:
    """LiteLLM proxy: one worker, no database (its master key is the only key), the fake upstream as model."""
    binary = litellm_binary(install)
    config = workdir / "litellm.yaml"
    config.write_text(textwrap.dedent(f"""\
        model_list:
          - model_name: fake-small
            litellm_params:
              model: openai/fake-small
              api_base: {upstream.url}/v1
              api_key: sk-bench
        litellm_settings:
          telemetry: false
          drop_params: true
        general_settings:
          master_key: {LITELLM_KEY}
        """))  # fmt: skip
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DATABASE_", "DJANGO_", "REDIS_"))}
    env.update(LITELLM_LOG="ERROR", LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False",
               DISABLE_SCHEMA_UPDATE="True", NO_DOCS="True")  # fmt: skip
    cmd = [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    server = Server("litellm", f"http://127.0.0.1:{port}", _start(cmd, workdir / "litellm.log", env, cwd=workdir),
                    workdir / "litellm.log")  # fmt: skip
    try:
        wait_http(server.url + "/health/liveliness", timeout=180)
    except SystemExit as error:
        server.stop()
        tail = server.log.read_text(errors="replace").strip().splitlines()[-5:]
        raise LiteLLMUnavailable(f"the proxy did not start: {' | '.join(tail)}") from error
    return server


def _bench_plan(plan_model: Any) -> Any:
    """The Team plan without its own rate limits: a plan's limits override the server's, and the Team plan's
    1,500 chat completions a minute per key refused (429) part of a fast run that LiteLLM, without limits, served.
    """
    team = plan_model.objects.get(slug="team")
    fields = {f.name: getattr(team, f.name) for f in team._meta.concrete_fields if f.name not in ("id", "slug")}
    fields.update(name="Bench", api_rate_limit="", endpoint_rate_limits={}, is_default=False, position=99)
    plan, _ = plan_model.objects.update_or_create(slug="bench", defaults=fields)
    return plan


def crewdesk_fixture(*, model_alias: str = "bench-small") -> dict[str, Any]:
    """An org on a plan with overage and no spend cap, a model alias routed to the fake upstream, an API key, and a
    member with a session (for websockets). Needs Django set up (bench.stack.bench_stack)."""
    from django.conf import settings
    from django.test import Client

    from accounts.models import Membership, Organization, User
    from accounts.permissions import ROLE_SCOPES, Principal
    from accounts.services import api_key_create
    from billing.models import OrgBilling, Plan
    from saas.llm.models import ModelConfig

    org, _ = Organization.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    OrgBilling.objects.for_org(org).update_or_create(
        organization=org, defaults={"plan": _bench_plan(Plan), "status": "active", "spend_cap_usd": None}
    )
    ModelConfig.objects.update_or_create(
        alias=model_alias, defaults={"upstream": "openai", "upstream_model": "fake-small", "context_window": 8192}
    )
    key = api_key_create(
        principal=Principal(organization=org, scopes=ROLE_SCOPES["owner"]), name="bench", scopes=["ask"]
    )
    user, created = User.objects.get_or_create(email="bench@example.com")
    if created:
        user.set_password(os.urandom(16).hex())
        user.save(update_fields=["password"])
    Membership.objects.for_org(org).get_or_create(organization=org, user=user, defaults={"role": "member"})
    browser = Client()
    browser.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}"
    return {"org": org, "key": key, "user": user, "cookie": cookie, "model": model_alias}


class LedgerWriter:
    """The ledger stream's background writer, as the `llm.drain_ledger` task runs it in a Celery worker (every
    LLM_LEDGER_DRAIN_SECONDS), in a process of its own in the bench stack's environment: the API's rows reach
    PostgreSQL while the bench runs, and the writer's CPU is counted apart from the web server's (a worker's, on
    any machine). Not a thread of the bench: its bursts under the bench's GIL stalled the bench's own clients,
    and only while Crewdesk's side (the one side with a ledger) was measured."""

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self.rows = 0
        self.cpu = 0.0  # in its drains, as a worker's task would use it (its Django start-up left out)
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> LedgerWriter:
        self._process = subprocess.Popen(
            [sys.executable, __file__, "--drain-ledger", str(self.every)], cwd=BASE_DIR, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self._process.stdout is not None
        if self._process.stdout.readline().strip() != "ready":  # Django set up: its start-up is not in the run
            raise RuntimeError("the ledger writer did not start")
        return self

    def stop(self) -> None:
        assert self._process is not None
        self._process.terminate()  # it finishes the drain it is in and drains once more
        out, _ = self._process.communicate(timeout=120)
        totals = out.strip().splitlines()[-1].split()
        self.rows, self.cpu = int(totals[0]), float(totals[1])


def _drain_ledger_until_terminated(every: float) -> None:
    """`python bench/servers.py --drain-ledger SECONDS`: LedgerWriter's process."""
    import signal

    import django

    sys.path.insert(0, str(BASE_DIR))
    django.setup()
    from saas.llm import ledger

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    rows, cpu = 0, 0.0
    print("ready", flush=True)
    while True:
        stopped = stopping.wait(every)
        started = time.thread_time()
        rows += ledger.drain(batches=1000)
        cpu += time.thread_time() - started
        if stopped:
            break
    print(rows, cpu, flush=True)


def post_json(url: str, payload: dict[str, Any]) -> None:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).read()


def chat_conversations(fixture: dict[str, Any], count: int) -> list[str]:
    """`count` new conversations of the fixture's user, for browser-chat websockets."""
    from agents.models import Conversation

    org, user = fixture["org"], fixture["user"]
    made = Conversation.objects.for_org(org).bulk_create(
        [Conversation(organization=org, user=user, model=fixture["model"]) for _ in range(count)]
    )
    return [str(c.pk) for c in made]


def ledger_rows(api_key: Any = None, user: Any = None) -> int:
    from saas.llm.models import LLMCall

    rows = LLMCall.all_orgs.all()
    if api_key is not None:
        rows = rows.filter(api_key=api_key)
    if user is not None:
        rows = rows.filter(user=user)
    return rows.count()


if __name__ == "__main__" and sys.argv[1:2] == ["--drain-ledger"]:
    _drain_ledger_until_terminated(float(sys.argv[2]))
