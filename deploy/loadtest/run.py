"""`make loadtest`: the whole stack as `make run` starts it (daphne in WEB_PROCESSES processes, one per core by
default; one Celery worker on every queue, beat, the embedded PostgreSQL and Valkey; data in .devdata/loadtest,
apart from your own `make run`), model calls answered by
the fake OpenAI-compatible upstream (saas/llm/fake_upstream.py) with a provider-like latency, Locust headless with
the mix of locustfile.py, then the SLO table: p50/p95/p99 per endpoint, errors, throughput, and the peak memory
and CPU of each process of the stack.

    python deploy/loadtest/run.py [--users 300] [--duration 300] [--spawn-rate 10] [--teams 10]
                                  [--latency 0.2] [--token-rate 200]
(also LOADTEST_USERS / LOADTEST_DURATION / LOADTEST_SPAWN_RATE). Exits 1 when any request failed.
"""

import argparse
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil

BASE_DIR = Path(__file__).resolve().parent.parent.parent
HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, timeout: float, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{url}: the process exited ({process.returncode}); its log: {log}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
                if response.status == 200:
                    return
        except Exception:  # noqa: S110
            pass
        time.sleep(1)
    sys.exit(f"{url} did not answer 200 within {timeout:.0f} s; log: {log}")


class Sampler(threading.Thread):
    """Peak RSS and CPU seconds of each named process of the stack (web, worker, beat), read from /proc."""

    def __init__(self, root: psutil.Process) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.stop = threading.Event()
        self.peak_rss: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.servers = 0  # daphne processes serving (a supervisor of several is not one)
        self.started = time.monotonic()

    @staticmethod
    def role(process: psutil.Process) -> str | None:
        line = " ".join(process.cmdline())
        if "saas.core.http_server" in line:
            return "web (daphne)"
        if "saas.core.api_server" in line:
            return "api (uvicorn)"
        if " worker" in line and "celery" in line:
            return "worker (all queues)"
        if " beat" in line and "celery" in line:
            return "beat"
        if "postgres" in line:
            return "postgresql"
        if "valkey" in line or "redis-server" in line:
            return "valkey"
        return None

    def sample(self) -> dict[str, float]:
        rss: dict[str, float] = {}
        cpu: dict[str, float] = {}
        web: list[psutil.Process] = []
        for process in [self.root, *self.root.children(recursive=True)]:
            try:
                role = self.role(process)
                if role == "web (daphne)":
                    web.append(process)
                if role:
                    rss[role] = rss.get(role, 0) + process.memory_info().rss / 2**20
                    times = process.cpu_times()
                    cpu[role] = cpu.get(role, 0) + times.user + times.system
            except psutil.Error:
                continue
        parents = {process.ppid() for process in web if process.is_running()}
        self.servers = max(self.servers, sum(1 for process in web if process.pid not in parents))
        return {**{f"rss:{k}": v for k, v in rss.items()}, **{f"cpu:{k}": v for k, v in cpu.items()}}

    def run(self) -> None:
        first = self.sample()
        self.cpu_start = {k[4:]: v for k, v in first.items() if k.startswith("cpu:")}
        while not self.stop.wait(1.0):
            now = self.sample()
            for key, value in now.items():
                if key.startswith("rss:"):
                    self.peak_rss[key[4:]] = max(self.peak_rss.get(key[4:], 0), value)
                else:
                    self.cpu[key[4:]] = value
        self.elapsed = time.monotonic() - self.started


def warm_up(url: str, fixture: dict, timeout: float = 600) -> None:
    """Before measuring: the fixture's documents ingested (the worker has loaded the embedding model) and one
    search and one embedding answered (so has the web process): a cold start is not what the SLOs are about."""
    started = time.monotonic()
    for team in fixture["teams"]:
        headers = {"Authorization": f"Bearer {team['key']}", "Content-Type": "application/json"}
        while True:
            request = urllib.request.Request(url + "/api/v1/documents", headers=headers)  # noqa: S310
            with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
                documents = json.loads(response.read())["results"]
            if documents and all(d["status"] in ("ready", "failed") for d in documents):
                break
            if time.monotonic() - started > timeout:
                sys.exit(f"the fixture's documents were not ingested within {timeout:.0f} s")
            time.sleep(2)
    team = fixture["teams"][0]
    headers = {"Authorization": f"Bearer {team['key']}", "Content-Type": "application/json"}
    for path, body in (("/api/v1/search", {"query": "warm up"}), ("/api/v1/ask", {"question": "warm up"})):
        request = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers=headers, method="POST")  # noqa: S310
        urllib.request.urlopen(request, timeout=300).close()  # noqa: S310
    print(f"warmed up in {time.monotonic() - started:.0f} s", flush=True)


def print_table(stats_csv: Path, failures_csv: Path, seconds: float, users: int, sampler: Sampler) -> int:
    rows = list(csv.DictReader(stats_csv.open()))
    width = max(len(f"{r['Type']} {r['Name']}") for r in rows) + 2
    head = f"{'endpoint':<{width}}{'requests':>9}{'errors':>8}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
    print(f"\nSLO table: {users} users for {seconds:.0f} s (Locust {stats_csv.name})\n{head}\n{'-' * len(head)}")
    total_errors = 0
    for row in rows:
        label = row["Name"] if row["Name"].split(" ")[0] in (row["Type"], "page:") else f"{row['Type']} {row['Name']}"
        label = "all requests" if row["Name"] == "Aggregated" else label
        if row["Name"] == "Aggregated":
            print("-" * len(head))
        else:
            total_errors += int(row["Failure Count"])
        print(f"{label:<{width}}{row['Request Count']:>9}{row['Failure Count']:>8}{float(row['Requests/s']):>8.1f}"
              f"{row['50%']:>9}{row['95%']:>9}{row['99%']:>9}")  # fmt: skip
    failures = list(csv.DictReader(failures_csv.open())) if failures_csv.exists() else []
    for failure in failures[:20]:
        print(f"  error x{failure['Occurrences']}: {failure['Method']} {failure['Name']}: {failure['Error'][:160]}")
    elapsed = getattr(sampler, "elapsed", seconds) or seconds
    print(f"\n{'process':<24}{'peak RSS MiB':>14}{'CPU cores (avg)':>17}")
    for role in sorted(sampler.peak_rss):
        used = sampler.cpu.get(role, 0) - sampler.cpu_start.get(role, 0)
        label = f"web (daphne x{sampler.servers})" if role == "web (daphne)" else role
        print(f"{label:<24}{sampler.peak_rss[role]:>14.0f}{used / elapsed:>17.2f}")
    load = os.getloadavg()
    print(f"machine: {psutil.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    print(f"\nerrors: {total_errors}" + ("  (SLO: 0)" if total_errors else "  -- SLO met: 0 errors"))
    return 1 if total_errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=int(os.environ.get("LOADTEST_USERS", "300")))
    parser.add_argument("--duration", type=int, default=int(os.environ.get("LOADTEST_DURATION", "300")))
    parser.add_argument("--spawn-rate", type=float, default=float(os.environ.get("LOADTEST_SPAWN_RATE", "10")))
    parser.add_argument("--teams", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.2, help="the fake provider's seconds to first byte")
    parser.add_argument("--token-rate", type=float, default=200, help="the fake provider's streamed tokens/s")
    parser.add_argument("--data-dir", type=Path, default=BASE_DIR / ".devdata" / "loadtest")
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    members = max(1, -(-args.users // args.teams))  # enough browser sessions for every user

    upstream_port, port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    upstream_log, stack_log = args.data_dir / "upstream.log", args.data_dir / "stack.log"
    upstream = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "saas.llm.fake_upstream", "--port", str(upstream_port), "--max-requests", "1000"],
        cwd=BASE_DIR, stdout=upstream_log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
        "CREWDESK_DATA_DIR": str(args.data_dir),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DJANGO_SETTINGS_MODULE": "saas.settings.local",
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
        "LLM_OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
        "LLM_OPENAI_API_KEY": "sk-loadtest",
    }
    stack = subprocess.Popen(
        [sys.executable, "-m", "saas.devstack", "run"], cwd=BASE_DIR, env=env,
        stdout=stack_log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(f"http://127.0.0.1:{upstream_port}/v1/models", 60, upstream, upstream_log)
        config = json.dumps({"latency": args.latency, "token_rate": args.token_rate}).encode()
        urllib.request.urlopen(
            urllib.request.Request(f"http://127.0.0.1:{upstream_port}/_config", data=config, method="POST"), timeout=10
        ).close()
        print(f"starting the stack (make run's processes) on {url}; log: {stack_log}", flush=True)
        wait_for(url + "/readyz", 600, stack, stack_log)
        fixture = args.data_dir / "fixture.json"
        with fixture.open("w") as out:
            subprocess.run(  # noqa: S603
                [sys.executable, str(HERE / "fixture.py"), "--teams", str(args.teams), "--members", str(members),
                 "--url", url],
                cwd=BASE_DIR, env=env, stdout=out, check=True, timeout=1800,
            )  # fmt: skip
        warm_up(url, json.loads(fixture.read_text()))
        sampler = Sampler(psutil.Process(stack.pid))
        sampler.start()
        prefix = args.data_dir / "locust"
        print(f"Locust: {args.users} users, spawn rate {args.spawn_rate}/s, {args.duration} s", flush=True)
        subprocess.run(  # noqa: S603
            [sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless", "--only-summary",
             "-u", str(args.users), "-r", str(args.spawn_rate), "-t", f"{args.duration}s", "--host", url,
             "--csv", str(prefix), "--stop-timeout", "60", "--loglevel", "WARNING"],
            cwd=BASE_DIR, env={**env, "LOADTEST_FIXTURE": str(fixture)}, timeout=args.duration + 600,
        )  # fmt: skip
        sampler.stop.set()
        sampler.join()
        return print_table(
            prefix.with_name("locust_stats.csv"), prefix.with_name("locust_failures.csv"), args.duration, args.users,
            sampler,
        )  # fmt: skip
    finally:
        if stack.poll() is None:
            os.killpg(stack.pid, signal.SIGINT)  # as Ctrl-C: the app first, the data stores last
            try:
                stack.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(stack.pid, signal.SIGKILL)
        upstream.terminate()
        upstream.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
