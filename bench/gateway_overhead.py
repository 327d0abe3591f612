"""What the gateway adds to an LLM call, and what it costs under concurrency, side by side in one run.

Three sides get the same non-streaming chat request, pointed at the same fake OpenAI-compatible upstream:

- **direct**: the fake upstream itself (saas.llm.fake_upstream, bounded state);
- **crewdesk**: `/v1/chat/completions` on Crewdesk's API server (`python -m saas.core.api_server`: uvicorn, as
  `make run` starts it for developers' clients), on the bench stack's real PostgreSQL and Valkey, DEBUG off:
  API-key auth, rate limits, routing, PII masking, breaker, quota, ledger row. The cache is bypassed
  (`X-Crewdesk-Cache: bypass`): every call goes upstream;
- **crewdesk-daphne** (with --daphne-side): the same application on daphne (`python -m saas.core.http_server`),
  which serves the browser and websockets;
- **crewdesk-sync** (with --sync-side): the same, with `/v1` served by Django's synchronous views
  (LLM_ASYNC_GATEWAY=false) instead of the async path (saas/llm/asgi.py);
- **litellm**: LiteLLM proxy (`litellm[proxy]` from PyPI, installed on first use into bench/.venv-litellm, never the
  project's venv), one worker, no database, its master key as the only key.

At 1, 8, 32 and 64 concurrent clients (asyncio tasks sharing one keep-alive `aiohttp.ClientSession` per side), each
side runs for a few seconds in turn (the load generator is aiohttp because httpx spent about 6 ms of CPU per call
itself: on two cores it, not the servers, set the ceiling at 32 clients, where the bare upstream then answered
only about 400 calls/s), the order rotating every round, for several rounds: machine noise (other
processes on the same cores) hits every side alike. Printed per side: latency p50/p95 and the latency added to
direct at one client, requests/s, server CPU per call (user + system CPU time of the server's processes, read
from /proc before and after each slice, divided by the calls answered in it), and errors by kind. For Crewdesk,
the LLMCall ledger rows of the bench's API key are counted before and after: every call must have its row.

    python bench/gateway_overhead.py [--rounds 3] [--seconds 3] [--clients 1,8,32,64] [--no-litellm] [--sync-side]
                                     [--daphne-side]
                                     [--profile 20]     # then py-spy on Crewdesk at 8 clients for 20 s

The first run installs LiteLLM (a few minutes); BENCH_LITELLM_REQUIREMENT picks another version. Run it at nice 0
on a quiet machine; the load of other processes during the run is printed with the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
from servers import (
    LITELLM_KEY,
    LedgerWriter,
    LiteLLMUnavailable,
    Server,
    crewdesk_fixture,
    ledger_rows,
    litellm_version,
    percentile,
    start_crewdesk,
    start_fake_upstream,
    start_litellm,
)
from stack import bench_stack

MESSAGES = [{"role": "user", "content": "Summarise the quarterly report for the team, please."}]


@dataclass
class Side:
    name: str
    server: Server
    url: str
    model: str
    headers: dict[str, str]
    client: aiohttp.ClientSession | None = None
    attempts: int = 0


@dataclass
class Measure:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    cpu: float = 0.0

    @property
    def calls(self) -> int:
        return len(self.latencies)


async def _one_call(side: Side) -> str | None:
    """None when the call answered a chat completion; else the kind of error."""
    assert side.client is not None
    side.attempts += 1
    try:
        async with side.client.post(side.url, json={"model": side.model, "messages": MESSAGES}) as response:
            body = await response.read()
    except (aiohttp.ClientError, TimeoutError) as error:
        return type(error).__name__
    if response.status != 200:
        return f"HTTP {response.status}"
    try:
        if not orjson.loads(body)["choices"][0]["message"]["content"]:
            return "empty answer"
    except (ValueError, KeyError, IndexError, TypeError):
        return "not a chat completion"
    return None


async def run_slice(side: Side, clients: int, seconds: float, measure: Measure) -> None:
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            error = await _one_call(side)
            if error is None:
                measure.latencies.append((time.perf_counter() - started) * 1000)
            else:
                measure.errors[error] += 1
                await asyncio.sleep(0.01)  # an error is fast: do not spin

    cpu_before, started = side.server.cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    measure.seconds += time.perf_counter() - started
    measure.cpu += side.server.cpu_seconds() - cpu_before


def _machine_busy() -> float:
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + times.irq + times.softirq + getattr(times, "steal", 0.0)


def _own_cpu() -> float:
    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return total


async def measure_all(
    sides: list[Side], levels: list[int], rounds: int, seconds: float
) -> dict[str, dict[int, Measure]]:
    results = {side.name: {n: Measure() for n in levels} for side in sides}
    for side in sides:  # warm up: connections, imports, caches of every side
        await run_slice(side, 8, 2.0, Measure())
    for round_index in range(rounds):
        for n in levels:
            order = sides[round_index % len(sides) :] + sides[: round_index % len(sides)]
            for side in order:
                await run_slice(side, n, seconds, results[side.name][n])
        print(f"  round {round_index + 1}/{rounds} done", flush=True)
    return results


def print_tables(sides: list[Side], results: dict[str, dict[int, Measure]], levels: list[int]) -> None:
    names = [s.name for s in sides]
    width = max(14, *(len(n) + 2 for n in names))  # a column per side, its name never run into the next
    head = f"{'':<34}" + "".join(f"{n:>{width}}" for n in names)

    def row(label: str, values: list[str]) -> None:
        print(f"{label:<34}" + "".join(f"{v:>{width}}" for v in values))

    print("\n" + head)
    one = levels[0]
    direct = results["direct"][one].latencies
    for q, label in ((0.5, "p50"), (0.95, "p95")):
        row(f"latency {label} at {one} client (ms)", [f"{percentile(results[n][one].latencies, q):.2f}" for n in names])
    for q, label in ((0.5, "p50"), (0.95, "p95")):
        base = percentile(direct, q)
        row(f"added {label} at {one} client (ms)",
            ["-" if n == "direct" else f"+{percentile(results[n][one].latencies, q) - base:.2f}" for n in names])  # fmt: skip
    for n_clients in levels:
        row(f"requests/s at {n_clients} clients",
            [f"{results[n][n_clients].calls / max(results[n][n_clients].seconds, 1e-9):,.0f}" for n in names])  # fmt: skip
    for n_clients in levels:
        row(f"server CPU ms/call at {n_clients}",
            [f"{1000 * results[n][n_clients].cpu / max(results[n][n_clients].calls, 1):.2f}" for n in names])  # fmt: skip
    for n_clients in levels[1:]:
        row(f"latency p50 / p95 at {n_clients} (ms)",
            [f"{statistics.median(results[n][n_clients].latencies or [0]):.0f} / "
             f"{percentile(results[n][n_clients].latencies, 0.95):.0f}" for n in names])  # fmt: skip
    for n_clients in levels:
        row(f"errors at {n_clients} clients", [str(sum(results[n][n_clients].errors.values())) for n in names])
    kinds = {f"{n}: {kind} x{count}" for n in names for m in results[n].values() for kind, count in m.errors.items()}
    if kinds:
        print("errors by kind: " + "; ".join(sorted(kinds)))


async def main_async(args: argparse.Namespace, workdir: Path, fixture: dict[str, Any]) -> None:
    upstream = start_fake_upstream(workdir)
    servers: list[Server] = [upstream]
    try:
        crewdesk = start_crewdesk(workdir, upstream)
        servers.append(crewdesk)
        sides = [
            Side("direct", upstream, upstream.url + "/v1/chat/completions", "fake-small",
                 {"Authorization": "Bearer sk-bench"}),
            Side("crewdesk", crewdesk, crewdesk.url + "/v1/chat/completions", fixture["model"],
                 {"Authorization": f"Bearer {fixture['key'].secret}", "X-Crewdesk-Cache": "bypass"}),
        ]  # fmt: skip
        if args.daphne_side:  # the same application on daphne
            (workdir / "daphne").mkdir()
            crewdesk_daphne = start_crewdesk(workdir / "daphne", upstream, "daphne")
            servers.append(crewdesk_daphne)
            sides.append(Side("crewdesk-daphne", crewdesk_daphne, crewdesk_daphne.url + "/v1/chat/completions",
                              fixture["model"], sides[1].headers))  # fmt: skip
        if args.sync_side:  # the same Crewdesk with /v1 on Django's synchronous views (LLM_ASYNC_GATEWAY=false)
            (workdir / "sync").mkdir()
            crewdesk_sync = start_crewdesk(workdir / "sync", upstream, LLM_ASYNC_GATEWAY="false")
            servers.append(crewdesk_sync)
            sides.append(Side("crewdesk-sync", crewdesk_sync, crewdesk_sync.url + "/v1/chat/completions",
                              fixture["model"], sides[1].headers))  # fmt: skip
        litellm_note = ""
        if not args.no_litellm:
            try:
                litellm = start_litellm(workdir, upstream)
                servers.append(litellm)
                sides.append(Side("litellm", litellm, litellm.url + "/v1/chat/completions", "fake-small",
                                  {"Authorization": f"Bearer {LITELLM_KEY}"}))  # fmt: skip
                litellm_note = f"LiteLLM {litellm_version()} (one worker, no database)"
            except LiteLLMUnavailable as error:
                litellm_note = f"LiteLLM left out: {error}"
                print(litellm_note, flush=True)
        top = max(args.clients)
        for side in sides:
            side.client = aiohttp.ClientSession(
                headers=side.headers, timeout=aiohttp.ClientTimeout(total=60),
                connector=aiohttp.TCPConnector(limit=top, keepalive_timeout=60),
            )  # fmt: skip
        rows_before = await asyncio.to_thread(ledger_rows, fixture["key"].api_key)
        writer = LedgerWriter().start()

        load_before = os.getloadavg()
        busy_before, own_before, wall_before = _machine_busy(), _own_cpu(), time.monotonic()
        results = await measure_all(sides, args.clients, args.rounds, args.seconds)
        wall = time.monotonic() - wall_before
        others = max(0.0, (_machine_busy() - busy_before) - (_own_cpu() - own_before))
        load_after = os.getloadavg()

        crewdesk_side = next(s for s in sides if s.name == "crewdesk")
        await asyncio.to_thread(writer.stop)
        expected, rows = sum(s.attempts for s in sides if s.name.startswith("crewdesk")), 0
        for _ in range(60):  # rows written after the answer (or by a background writer) land within seconds
            rows = await asyncio.to_thread(ledger_rows, fixture["key"].api_key) - rows_before
            if rows >= expected:
                break
            await asyncio.sleep(0.5)

        print(f"\nGateway overhead: {args.rounds} rounds x {args.seconds:g} s per side and concurrency, interleaved; "
              f"non-streaming chat, same fake upstream; {litellm_note or 'LiteLLM not run (--no-litellm)'}")  # fmt: skip
        print(f"machine: {psutil.cpu_count()} cores; load average {load_before[0]:.2f} before, {load_after[0]:.2f} "
              f"after; other processes used {others / wall:.2f} cores on average during the run")  # fmt: skip
        print_tables(sides, results, args.clients)
        print(f"\ncrewdesk ledger: {rows} LLMCall rows for {expected} calls sent (warm-up included)"
              + ("" if rows == expected else f"  <-- {expected - rows:+d} MISSING" if rows < expected else ""))  # fmt: skip
        print(f"ledger writer (the llm.drain_ledger task, a worker's CPU, not the web server's): {writer.rows} rows, "
              f"{1000 * writer.cpu / max(writer.rows, 1):.2f} ms CPU per row")  # fmt: skip
        for side in sides:
            if side.client is not None:
                await side.client.close()

        if args.profile:
            from profile_crewdesk import profile_at

            await profile_at(crewdesk_side, clients=8, seconds=args.profile, workdir=workdir, run_slice=run_slice,
                             measure_cls=Measure)  # fmt: skip
    finally:
        for server in reversed(servers):
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per side, concurrency and round")
    parser.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32, 64])
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--daphne-side", action="store_true", help="also Crewdesk on daphne instead of uvicorn")
    parser.add_argument(
        "--sync-side",
        action="store_true",
        help="also Crewdesk with /v1 on the synchronous views (LLM_ASYNC_GATEWAY=false)",
    )
    parser.add_argument("--profile", type=float, default=0, help="seconds of py-spy on Crewdesk at 8 clients")
    args = parser.parse_args()
    with bench_stack(), tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        asyncio.run(main_async(args, Path(tmp), crewdesk_fixture()))


if __name__ == "__main__":
    main()
