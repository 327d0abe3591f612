"""A development loop for the gateway's CPU per call: the bench stack and fake upstream started once, Crewdesk
restarted from the working tree for each measurement (so a change is measured in seconds, not minutes).

    python bench/quick_cpu.py [--clients 8] [--seconds 5] [--rounds 2] [--kind chat|stream|embed] [--watch]
                              [--steps] [--paths async,sync] [--servers api,daphne] [--latency 300] [--env NAME=VALUE ...]
                              [--ab NAME=VALUE --repeat 3] [--latency 1000 --against REV]

--ab alternates every side without and with one environment variable (a switch an experiment reads), --repeat
runs the sides that many times in turn: on this shared machine only alternated figures compare. With --latency,
--ab runs both servers at once and interleaves their calls (paired: the machine's drift hits both alike).

Prints requests/s, server CPU per call, Redis commands per call and SQL statements per call (from the
servers' own counters) for Crewdesk. With --watch it stays up and measures again each time the file
/tmp/quick_cpu.go is created (and deleted by it). Not a benchmark to publish: gateway_overhead.py is that.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil
import step_cpu
from profile_crewdesk import print_summary, py_spy
from servers import BASE_DIR, crewdesk_fixture, ledger_rows, post_json, start_crewdesk, start_fake_upstream
from stack import bench_stack

MESSAGES = [{"role": "user", "content": "Summarise the quarterly report for the team, please."}]
TRIGGER = Path("/tmp/quick_cpu.go")  # noqa: S108  (a developer's loop on their own machine)
RAW = "/tmp/quick_cpu.pyspy.raw"  # noqa: S108
STEPS = "/tmp/quick_cpu.steps.json"  # noqa: S108


def _redis_calls() -> Counter[str]:
    from saas.core.redis import get_redis

    stats = get_redis().info("commandstats")
    return Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items() if not k.endswith("info")})


def _sql_statements() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(sum(xact_commit + xact_rollback), 0) FROM pg_stat_database")
        return int(cursor.fetchone()[0])


async def _call(client: httpx.AsyncClient, url: str, kind: str, model: str) -> str | None:
    try:
        if kind == "embed":
            response = await client.post(url + "/v1/embeddings", json={"model": "local-embed", "input": "hello"})
        elif kind == "stream":
            async with client.stream("POST", url + "/v1/chat/completions",
                                     json={"model": model, "messages": MESSAGES, "stream": True}) as response:  # fmt: skip
                body = b"".join([part async for part in response.aiter_bytes()])
                return None if response.status_code == 200 and b"[DONE]" in body else f"HTTP {response.status_code}"
        else:
            response = await client.post(url + "/v1/chat/completions", json={"model": model, "messages": MESSAGES})
    except httpx.HTTPError as error:
        return type(error).__name__
    return None if response.status_code == 200 else f"HTTP {response.status_code} {response.text[:200]}"


async def latency(server: Any, upstream: Any, headers: dict[str, str], model: str, calls: int) -> None:
    """One client, calls alternated between the bare upstream and Crewdesk: what Crewdesk adds to a call's wall
    time when nothing else runs (#15's "added p50 at one client"), beside the CPU it spends on one."""
    async with httpx.AsyncClient(headers=headers, timeout=60) as client:
        times: dict[str, list[float]] = {"direct": [], "crewdesk": []}
        cpu0 = server.cpu_seconds()
        for index in range(calls + 20):
            for side, url in (("direct", upstream.url), ("crewdesk", server.url)):
                t0 = time.perf_counter()
                error = await _call(client, url, "chat", model)
                if error:
                    raise SystemExit(f"{side}: {error}")
                if index >= 20:  # warm-up left out
                    times[side].append(1000 * (time.perf_counter() - t0))
        cpu = server.cpu_seconds() - cpu0
    p50 = {side: statistics.median(values) for side, values in times.items()}
    p95 = {side: statistics.quantiles(values, n=20)[-1] for side, values in times.items()}
    print(
        f"1 client, {calls} calls each: direct p50 {p50['direct']:.2f} ms p95 {p95['direct']:.2f}; crewdesk p50 "
        f"{p50['crewdesk']:.2f} p95 {p95['crewdesk']:.2f}; added p50 +{p50['crewdesk'] - p50['direct']:.2f} ms; "
        f"server CPU {1000 * cpu / (calls + 20):.2f} ms/call",
        flush=True,
    )


async def paired_latency(
    servers: dict[str, Any], upstream: Any, headers: dict[str, str], model: str, calls: int
) -> None:
    """`latency` for two servers at once (without and with --ab's variable, or --against's commit and this
    tree), both up during the whole run, their calls interleaved with direct ones, the order of the two swapped
    every round: the machine's drift over minutes, larger here than most changes, hits both alike. Prints each
    one's added p50 and p95 and the median of the per-round differences."""
    async with httpx.AsyncClient(headers=headers, timeout=60) as client:
        sides = {"direct": upstream, **servers}
        times: dict[str, list[float]] = {side: [] for side in sides}
        names = list(servers)
        for index in range(calls + 20):
            order = ["direct", *(names if index % 2 == 0 else names[::-1])]
            for side in order:
                t0 = time.perf_counter()
                error = await _call(client, sides[side].url, "chat", model)
                if error:
                    raise SystemExit(f"{side}: {error}")
                if index >= 20:
                    times[side].append(1000 * (time.perf_counter() - t0))
    direct = statistics.median(times["direct"])
    for side in names:
        p95 = statistics.quantiles(times[side], n=20)[-1]
        print(f"  {side or 'as is'}: p50 {statistics.median(times[side]):.2f} ms, added p50 "
              f"+{statistics.median(times[side]) - direct:.2f} ms, p95 {p95:.2f} ms", flush=True)  # fmt: skip
    first, second = (times[name] for name in names)
    print(f"  median of the paired differences ({names[1]} minus {names[0] or 'as is'}): "
          f"{statistics.median(b - a for a, b in zip(first, second, strict=True)):+.3f} ms (direct p50 {direct:.2f})",
          flush=True)  # fmt: skip


async def measure(server: Any, headers: dict[str, str], model: str, args: argparse.Namespace) -> None:
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as client:
        errors: Counter[str] = Counter()

        async def slice_(seconds: float) -> int:
            deadline, done = time.perf_counter() + seconds, 0

            async def worker() -> None:
                nonlocal done
                while time.perf_counter() < deadline:
                    error = await _call(client, server.url, args.kind, model)
                    if error:
                        errors[error] += 1
                        await asyncio.sleep(0.01)
                    else:
                        done += 1

            await asyncio.gather(*(worker() for _ in range(args.clients)))
            return done

        await slice_(2.0)
        for _ in range(args.rounds):
            redis0, sql0 = _redis_calls(), await asyncio.to_thread(_sql_statements)
            spy = None
            if args.profile:
                spy = await asyncio.create_subprocess_exec(
                    str(py_spy()), "record", "--pid", str(server.process.pid), "--rate", "250", "--gil",
                    "--nonblocking", "--format", "raw", "--duration", str(int(args.seconds)), "--output", RAW,
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
                await asyncio.sleep(0.3)
            await asyncio.sleep(0.7)
            steps0 = step_cpu.read(STEPS)
            cpu0, t0, machine0 = server.cpu_seconds(), time.perf_counter(), psutil.cpu_times()
            own0 = time.process_time()
            calls = await slice_(args.seconds)
            wall, cpu = time.perf_counter() - t0, server.cpu_seconds() - cpu0
            own_cpu = time.process_time() - own0
            machine1 = psutil.cpu_times()
            idle = (machine1.idle - machine0.idle) / wall
            steal = (getattr(machine1, "steal", 0.0) - getattr(machine0, "steal", 0.0)) / wall
            await asyncio.sleep(0.7)
            steps1 = step_cpu.read(STEPS)
            by_command, sql = _redis_calls() - redis0, await asyncio.to_thread(_sql_statements) - sql0
            redis = sum(by_command.values())
            n = max(calls, 1)
            print(
                f"{args.kind} x{args.clients}: {calls / wall:7.1f} req/s  {1000 * cpu / n:6.2f} ms CPU/call  "
                f"redis {redis / n:5.1f}/call  sql xacts {sql / n:5.2f}/call  errors {dict(errors)}",
                flush=True,
            )
            print("  redis per call: " + ", ".join(f"{k} {v / n:.1f}" for k, v in by_command.most_common(12)))
            print(
                f"  server busy {cpu / wall:.2f} of a core; machine idle {idle:.2f} of {psutil.cpu_count()} cores, "
                f"steal {steal:.2f}; this client {own_cpu / wall:.2f} of a core"
            )
            if args.steps:
                print(step_cpu.table(steps0, steps1, calls=calls, process_cpu=cpu))
            if spy is not None:
                await spy.wait()
                print_summary(Path(RAW).read_text(), 1000 * cpu / n, top=25)


def _checkout(rev: str, workdir: Path) -> Path:
    """A commit's files in a directory of their own (git archive: no worktree to clean up), for --against."""
    tree = workdir / "against"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", rev], cwd=BASE_DIR, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--kind", default="chat")
    parser.add_argument("--reply-words", type=int, default=0, help="the fake's answer in N words (default: its own)")
    parser.add_argument("--watch", action="store_true")
    parser.add_argument("--paths", default="async", help="async, sync or both in turn (async,sync)")
    parser.add_argument("--servers", default="api", help="api (uvicorn), daphne, or both in turn (api,daphne)")
    parser.add_argument("--profile", action="store_true", help="py-spy during each measured slice")
    parser.add_argument("--steps", action="store_true", help="per-step CPU clocks in the server (step_cpu.py)")
    parser.add_argument("--latency", type=int, default=0, help="N calls at one client, alternated with direct")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server (repeatable)")
    parser.add_argument("--ab", default="", help="NAME=VALUE: every side also without, then with, this variable")
    parser.add_argument(
        "--against", default="", help="REV: with --latency, that commit's server paired with this tree's"
    )
    parser.add_argument("--repeat", type=int, default=1, help="the sides N times in turn (alternated)")
    args = parser.parse_args()
    with bench_stack(), tempfile.TemporaryDirectory(prefix="quick-cpu-") as tmp:
        workdir = Path(tmp)
        fixture = crewdesk_fixture()
        headers = {"Authorization": f"Bearer {fixture['key'].secret}", "X-Crewdesk-Cache": "bypass"}
        upstream = start_fake_upstream(workdir)
        if args.reply_words:  # longer answers: a stream's per-chunk cost shows
            post_json(upstream.url + "/_config", {"reply": " ".join(["word"] * args.reply_words)})
        try:
            if args.latency and (args.ab or args.against):  # both servers up at once, their calls interleaved
                other = _checkout(args.against, workdir) if args.against else None
                for _ in range(args.repeat):
                    env = {"LLM_ASYNC_GATEWAY": "true", **dict(item.split("=", 1) for item in args.env)}
                    if other is not None:
                        older = start_crewdesk(workdir, upstream, "api", tree=other, **env)
                        servers = {args.against: older, "this tree": start_crewdesk(workdir, upstream, "api", **env)}
                    else:
                        name, value = args.ab.split("=", 1)
                        without = start_crewdesk(workdir, upstream, "api", **env)
                        servers = {
                            "": without,
                            args.ab: start_crewdesk(workdir, upstream, "api", **env, **{name: value}),
                        }
                    try:
                        print(f"--- paired, load average {os.getloadavg()[0]:.2f}", flush=True)
                        asyncio.run(paired_latency(servers, upstream, headers, fixture["model"], args.latency))
                    finally:
                        for server in servers.values():
                            server.stop()
                return
            while True:
                variants = [""] + ([args.ab] if args.ab else [])
                sides = [(path, kind, variant) for path in args.paths.split(",") for kind in args.servers.split(",")
                         for variant in variants] * args.repeat  # fmt: skip
                for path, kind, variant in sides:  # the async path (asgi.py) or Django's sync views; the server
                    env = {"LLM_ASYNC_GATEWAY": "false" if path == "sync" else "true"}
                    env.update(item.split("=", 1) for item in [*args.env, *([variant] if variant else [])])
                    server = start_crewdesk(
                        workdir, upstream, kind, **env, **({"BENCH_STEP_FILE": STEPS} if args.steps else {})
                    )
                    try:
                        print(f"--- {path} path on {kind} {variant}; load average {os.getloadavg()[0]:.2f}", flush=True)
                        before = ledger_rows(fixture["key"].api_key)
                        if args.latency:
                            asyncio.run(latency(server, upstream, headers, fixture["model"], args.latency))
                        else:
                            asyncio.run(measure(server, headers, fixture["model"], args))
                        print(f"(ledger rows so far {ledger_rows(fixture['key'].api_key) - before}; log {server.log})")
                    finally:
                        server.stop()
                if not args.watch:
                    break
                while not TRIGGER.exists():
                    time.sleep(0.5)
                TRIGGER.unlink()
        finally:
            upstream.stop()


if __name__ == "__main__":
    main()
