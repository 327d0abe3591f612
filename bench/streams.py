"""Many streams at once: time to first token, errors, threads and memory, side by side in one run.

Three sides, each with `--streams` (default 1,000) concurrent streams, first opened all at once (burst), then
ramped in at `--rate` per second (default 50/s):

- **direct SSE**: `POST /v1/chat/completions` with `stream: true` straight to the fake upstream;
- **crewdesk SSE**: the same request on Crewdesk's `/v1/chat/completions` (API key, on the API server, uvicorn, as
  `make run` starts it; real PostgreSQL and Valkey, DEBUG off), one alias routed to the same fake upstream, cache
  bypassed;
- **SSE on daphne** (`--sides ...,sse-daphne`): the same request on daphne, which serves the browser;
- **crewdesk websocket chat**: the browser chat on daphne, `/ws/chat/<conversation>/`, signed in with a session
  cookie and the page's Origin like a browser, one conversation per socket, the frame
  `{"type": "ask", "content": ...}`; the first token is the first `delta` event.

The fake upstream answers after `--first-byte` seconds (default 1.0: the floor of every time to first token) and
then streams its reply slowly enough that every stream of a phase is still open when the last one starts
(`--stream-seconds`, default 25). The time to first token is counted from the moment the client starts to
connect. Printed per side and phase: errors by kind, TTFT p50/p95 (and p95 against direct's), the most streams
open at once, and the server's peak threads and RSS (sampled from /proc every 0.25 s); Crewdesk's LLMCall rows
are counted against the streams sent. Phases run in turn (direct, crewdesk SSE, websocket; burst, then ramp).

    python bench/streams.py [--streams 1000] [--rate 50] [--sides direct,sse,ws,sse-daphne] [--modes burst,ramp]
                            [--web-processes 1]

The bench raises its open-file limit (inherited by the servers it starts) to what the streams need.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psutil
from servers import (
    LedgerWriter,
    Server,
    chat_conversations,
    crewdesk_fixture,
    ledger_rows,
    percentile,
    post_json,
    raise_fd_limit,
    start_crewdesk,
    start_fake_upstream,
)
from stack import bench_stack

QUESTION = "Tell me a long story about the quarterly report, please."
REPLY_WORDS = 40


@dataclass
class Phase:
    side: str
    mode: str
    ttft: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    open_now: int = 0
    open_peak: int = 0
    threads_peak: int = 0
    rss_peak: float = 0.0
    seconds: float = 0.0
    ledger: tuple[int, int] | None = None  # (rows, streams sent)

    def opened(self) -> None:
        self.open_now += 1
        self.open_peak = max(self.open_peak, self.open_now)


def _question(phase: Phase) -> str:
    """A question no cache has seen: every stream goes upstream (the chat has no bypass switch)."""
    phase.sent += 1
    return f"{QUESTION} ({phase.mode} {phase.side} {phase.sent} {time.time_ns()})"


async def sse_stream(client: httpx.AsyncClient, url: str, model: str, phase: Phase, timeout: float) -> None:
    started = time.perf_counter()
    body = {"model": model, "messages": [{"role": "user", "content": _question(phase)}], "stream": True}
    first = done = False
    try:
        async with asyncio.timeout(timeout), client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                await response.aread()
                phase.errors[f"HTTP {response.status_code}"] += 1
                return
            phase.opened()
            try:
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[6:]
                    if data == "[DONE]":
                        done = True
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:
                        phase.errors[f"error event: {chunk['error'].get('code') or chunk['error'].get('type')}"] += 1
                        return
                    if not first and chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                        first = True
                        phase.ttft.append(time.perf_counter() - started)
            finally:
                phase.open_now -= 1
    except TimeoutError:
        phase.errors["timeout"] += 1
        return
    except (httpx.HTTPError, ValueError) as error:
        phase.errors[type(error).__name__] += 1
        return
    if not done or not first:
        phase.errors["stream ended early" if first else "no token"] += 1


async def ws_chat(url: str, origin: str, cookie: str, model: str, phase: Phase, timeout: float) -> None:
    from websockets.asyncio.client import connect
    from websockets.typing import Origin

    started = time.perf_counter()
    first = False
    try:
        async with (
            asyncio.timeout(timeout),
            connect(url, origin=Origin(origin), additional_headers={"Cookie": cookie}, open_timeout=None) as ws,
        ):
            phase.opened()
            try:
                await ws.send(json.dumps({"type": "ask", "content": _question(phase), "model": model}))
                while True:
                    event = json.loads(await ws.recv())
                    if event["type"] == "delta" and not first:
                        first = True
                        phase.ttft.append(time.perf_counter() - started)
                    elif event["type"] == "done":
                        if event.get("status") != "complete":
                            phase.errors[f"done: {event.get('status')}"] += 1
                        elif not first:
                            phase.errors["no token"] += 1
                        return
                    elif event["type"] == "error":
                        phase.errors[f"error event: {event.get('error', {}).get('code')}"] += 1
                        return
            finally:
                phase.open_now -= 1
    except TimeoutError:
        phase.errors["timeout"] += 1
    except Exception as error:  # refused handshakes, closes, resets: counted by kind
        phase.errors[type(error).__name__] += 1


async def sample(server: Server, phase: Phase, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            phase.threads_peak = max(phase.threads_peak, server.threads())
            phase.rss_peak = max(phase.rss_peak, server.rss_mb())
        except psutil.Error:
            pass
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


async def run_phase(
    phase: Phase, server: Server, starts: list[Callable[[], Coroutine[Any, Any, None]]], rate: float
) -> None:
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample(server, phase, stop))
    began = time.perf_counter()
    tasks = []
    for index, start in enumerate(starts):
        if phase.mode == "ramp":
            await asyncio.sleep(max(0.0, began + index / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(start()))
    await asyncio.gather(*tasks)
    phase.seconds = time.perf_counter() - began
    stop.set()
    await sampler


async def main_async(args: argparse.Namespace, workdir: Path, fixture: dict[str, Any]) -> list[Phase]:
    upstream = start_fake_upstream(workdir)
    servers = [upstream]
    phases: list[Phase] = []
    try:
        # SSE on the API server (uvicorn), websockets on daphne: as `make run` serves them.
        processes = str(args.web_processes)
        (workdir / "api").mkdir()
        (workdir / "web").mkdir()
        crewdesk = start_crewdesk(workdir / "api", upstream, "api", API_PROCESSES=processes)
        web = start_crewdesk(workdir / "web", upstream, "daphne", WEB_PROCESSES=processes)
        servers += [crewdesk, web]
        post_json(upstream.url + "/_config", {"latency": args.first_byte, "token_rate": REPLY_WORDS / args.stream_seconds,
                                          "reply": " ".join(["word"] * REPLY_WORDS)})  # fmt: skip
        limits = httpx.Limits(max_connections=args.streams + 16, max_keepalive_connections=args.streams + 16)
        timeout = httpx.Timeout(args.timeout, connect=args.timeout)
        direct = httpx.AsyncClient(limits=limits, timeout=timeout, headers={"Authorization": "Bearer sk-bench"})
        gateway = httpx.AsyncClient(limits=limits, timeout=timeout, headers={
            "Authorization": f"Bearer {fixture['key'].secret}", "X-Crewdesk-Cache": "bypass"})  # fmt: skip
        ws_base = web.url.replace("http://", "ws://") + "/ws/chat/"
        for mode in args.modes:
            for side in args.sides:
                phase = Phase(side, mode)
                n = args.streams
                starts: list[Callable[[], Coroutine[Any, Any, None]]]
                if side == "direct":
                    url = upstream.url + "/v1/chat/completions"
                    starts = [partial(sse_stream, direct, url, "fake-small", phase, args.timeout)] * n
                    server = upstream
                elif side in ("sse", "sse-daphne"):
                    server = crewdesk if side == "sse" else web
                    url = server.url + "/v1/chat/completions"
                    starts = [partial(sse_stream, gateway, url, fixture["model"], phase, args.timeout)] * n
                else:
                    ids = await asyncio.to_thread(chat_conversations, fixture, n)
                    starts = [partial(ws_chat, f"{ws_base}{cid}/", web.url, fixture["cookie"], fixture["model"],
                                      phase, args.timeout) for cid in ids]  # fmt: skip
                    server = web
                who = None if side == "ws" else fixture["key"].api_key
                before = await asyncio.to_thread(ledger_rows, who, fixture["user"] if side == "ws" else None)
                print(f"  {mode}: {side} x {n} ...", flush=True)
                # Crewdesk's rows (/v1 calls and chat answers) go through the ledger stream, as under `make run`,
                # where the worker's drain task writes them.
                writer = LedgerWriter().start() if side != "direct" else None
                await run_phase(phase, server, starts, args.rate)
                if writer is not None:
                    await asyncio.to_thread(writer.stop)
                if side != "direct":
                    rows = 0
                    for _ in range(40):
                        rows = await asyncio.to_thread(ledger_rows, who, fixture["user"] if side == "ws" else None)
                        if rows - before >= n:
                            break
                        await asyncio.sleep(0.5)
                    phase.ledger = (rows - before, n)
                phases.append(phase)
                await asyncio.sleep(3)  # let the servers settle (closing sockets, threads winding down)
        await direct.aclose()
        await gateway.aclose()
    finally:
        for server in reversed(servers):
            server.stop()
    return phases


def print_table(phases: list[Phase], args: argparse.Namespace) -> None:
    label = {"direct": "direct SSE", "sse": "crewdesk SSE", "sse-daphne": "SSE on daphne", "ws": "crewdesk ws chat"}
    width = 18
    print(f"\nStreams: {args.streams} per side and phase; upstream first byte after {args.first_byte:g} s, then "
          f"{REPLY_WORDS} tokens over {args.stream_seconds:g} s; burst = all at once, ramp = {args.rate:g}/s")  # fmt: skip
    plural = "es" if args.web_processes > 1 else ""
    print(f"machine: {psutil.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at the end; Crewdesk's SSE on "
          f"{args.web_processes} API server (uvicorn) process{plural}, websockets on {args.web_processes} daphne "
          f"process{plural}")  # fmt: skip
    for mode in args.modes:
        row_phases = [p for p in phases if p.mode == mode]
        direct = next((p for p in row_phases if p.side == "direct"), None)
        print(f"\n{mode:<30}" + "".join(f"{label[p.side]:>{width}}" for p in row_phases))

        def row(name: str, values: list[str]) -> None:
            print(f"{name:<30}" + "".join(f"{v:>{width}}" for v in values))

        row("errors", [str(sum(p.errors.values())) for p in row_phases])
        row(
            "TTFT p50 / p95 (s)",
            [f"{percentile(p.ttft, 0.5):.2f} / {percentile(p.ttft, 0.95):.2f}" for p in row_phases],
        )
        if direct and direct.ttft:
            row("TTFT p95 / direct's p95", [f"{percentile(p.ttft, 0.95) / percentile(direct.ttft, 0.95):.2f}x"
                                            for p in row_phases])  # fmt: skip
        row("streams open at once (max)", [str(p.open_peak) for p in row_phases])
        row("server threads (max)", [str(p.threads_peak) for p in row_phases])
        row("server RSS (max, MB)", [f"{p.rss_peak:.0f}" for p in row_phases])
        row("phase wall time (s)", [f"{p.seconds:.1f}" for p in row_phases])
        row("ledger rows / streams", [f"{p.ledger[0]} / {p.ledger[1]}" if p.ledger else "-" for p in row_phases])
        for p in row_phases:
            if p.errors:
                print(f"  {label[p.side]} errors: " + ", ".join(f"{k} x{v}" for k, v in p.errors.most_common()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--web-processes", type=int, default=1,
                        help="Crewdesk's processes of each server, API (uvicorn) and daphne (1: one process per side, "
                             "as every bench; `make run` starts one per core); threads, RSS and CPU are summed over "
                             "them")  # fmt: skip
    parser.add_argument("--rate", type=float, default=50.0, help="streams started per second when ramped")
    parser.add_argument("--first-byte", type=float, default=1.0)
    parser.add_argument("--stream-seconds", type=float, default=25.0)
    parser.add_argument("--timeout", type=float, default=180.0, help="per stream, from connect to the last token")
    parser.add_argument("--sides", type=lambda s: s.split(","), default=["direct", "sse", "ws"])
    parser.add_argument("--modes", type=lambda s: s.split(","), default=["burst", "ramp"])
    args = parser.parse_args()
    # Each stream holds a socket in this process, one in Crewdesk and one upstream (two for Crewdesk's calls).
    limit = raise_fd_limit(4 * args.streams + 1024)
    if limit < 2 * args.streams + 256:
        raise SystemExit(f"open-file limit {limit} is too low for {args.streams} streams (raise the hard limit)")
    with bench_stack(), tempfile.TemporaryDirectory(prefix="bench-streams-") as tmp:
        fixture = crewdesk_fixture()
        phases = asyncio.run(main_async(args, Path(tmp), fixture))
    print_table(phases, args)


if __name__ == "__main__":
    main()
