"""The web process's CPU per websocket handshake (and per close), and optionally where it goes (py-spy).

Opens `--sockets` browser-chat websockets (`/ws/chat/<conversation>/`, signed in, the page's Origin) on one
daphne process, `--concurrency` at a time, keeps them all open, then closes them; the server's CPU (user +
system, from /proc) is read before and after each half. CPU time holds on a shared machine where wall-clock
figures do not; the handshake rate at the given concurrency is printed too, for what it is worth.

    python bench/ws_handshake.py [--sockets 400] [--concurrency 16] [--profile] [--ask]

`--profile` samples the server with py-spy during the opening half (bench/profile_crewdesk.py's summary:
CPU by component and by our own function). `--ask`: then every open socket asks one question (a 40-word
answer, streamed as fast as the fake upstream can), `--concurrency` at a time, and the server's CPU per chat
answer is printed (with --profile, the answers are profiled instead of the handshakes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from servers import chat_conversations, crewdesk_fixture, post_json, raise_fd_limit, start_crewdesk, start_fake_upstream
from stack import bench_stack


async def _open_all(urls: list[str], origin: str, cookie: str, concurrency: int) -> tuple[list[Any], int]:
    from websockets.asyncio.client import connect
    from websockets.typing import Origin

    slots = asyncio.Semaphore(concurrency)
    errors = 0

    async def one(url: str) -> Any:
        nonlocal errors
        async with slots:
            try:
                return await connect(url, origin=Origin(origin), additional_headers={"Cookie": cookie},
                                     open_timeout=60)  # fmt: skip
            except Exception:
                errors += 1
                return None

    sockets = await asyncio.gather(*(one(u) for u in urls))
    return [s for s in sockets if s is not None], errors


async def _ask_all(sockets: list[Any], concurrency: int) -> int:
    slots = asyncio.Semaphore(concurrency)
    failed = 0

    async def one(ws: Any) -> None:
        nonlocal failed
        async with slots:
            await ws.send(json.dumps({"type": "ask", "content": f"Question {time.time_ns()}", "model": "bench-small"}))
            while True:
                event = json.loads(await ws.recv())
                if event["type"] in ("done", "error"):
                    failed += event["type"] == "error" or event.get("status") != "complete"
                    return

    await asyncio.gather(*(one(ws) for ws in sockets))
    return failed


async def _spy(args: argparse.Namespace, pid: int, raw: Path) -> Any:
    spy = await asyncio.create_subprocess_exec(
        args.py_spy, "record", "--pid", str(pid), "--rate", "250", "--gil", "--nonblocking", "--format", "raw",
        "--output", str(raw), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await asyncio.sleep(1.0)
    return spy


def _summary(raw: Path, cpu_ms: float) -> None:
    from profile_crewdesk import print_summary

    print_summary(raw.read_text(), cpu_ms, top=30)
    keep = Path(__file__).resolve().parent.parent / ".devdata" / "bench" / "ws_handshake.pyspy.raw"
    keep.parent.mkdir(parents=True, exist_ok=True)
    keep.write_text(raw.read_text())
    print(f"(raw stacks kept in {keep})")


async def main_async(args: argparse.Namespace, workdir: Path, fixture: dict[str, Any]) -> None:
    upstream = start_fake_upstream(workdir)
    crewdesk = start_crewdesk(workdir, upstream, "daphne")  # websockets are daphne's
    try:
        ws_base = crewdesk.url.replace("http://", "ws://") + "/ws/chat/"
        warm = await asyncio.to_thread(chat_conversations, fixture, 32)
        sockets, _ = await _open_all([f"{ws_base}{c}/" for c in warm], crewdesk.url, fixture["cookie"], 8)
        await asyncio.gather(*(s.close() for s in sockets))
        await asyncio.sleep(1)
        if args.ask:
            post_json(upstream.url + "/_config", {"latency": 0, "token_rate": 0, "reply": " ".join(["word"] * 40)})
        raw = workdir / "ws.pyspy.raw"
        for round_ in range(args.rounds):
            ids = await asyncio.to_thread(chat_conversations, fixture, args.sockets)
            urls = [f"{ws_base}{c}/" for c in ids]
            last = round_ == args.rounds - 1
            spy = await _spy(args, crewdesk.process.pid, raw) if args.profile and last and not args.ask else None
            cpu0, t0 = crewdesk.cpu_seconds(), time.perf_counter()
            sockets, errors = await _open_all(urls, crewdesk.url, fixture["cookie"], args.concurrency)
            await asyncio.sleep(0.5)  # the last handshakes' after-work (nothing should be left)
            cpu1, t1 = crewdesk.cpu_seconds(), time.perf_counter()
            opened = len(sockets)
            handshake_ms = 1000 * (cpu1 - cpu0) / max(opened, 1)
            if spy is not None:
                spy.send_signal(2)
                await spy.communicate()
                _summary(raw, handshake_ms)
            answer = ""
            if args.ask:
                spy = await _spy(args, crewdesk.process.pid, raw) if args.profile and last else None
                cpu_a, t_a = crewdesk.cpu_seconds(), time.perf_counter()
                failed = await _ask_all(sockets, args.concurrency)
                await asyncio.sleep(0.5)
                cpu_b, t_b = crewdesk.cpu_seconds(), time.perf_counter()
                answer_ms = 1000 * (cpu_b - cpu_a) / max(opened, 1)
                answer = (f"; {opened - failed} answers ({failed} failed) in {t_b - t_a:.1f} s, server CPU per "
                          f"answer {answer_ms:.2f} ms")  # fmt: skip
                if spy is not None:
                    spy.send_signal(2)
                    await spy.communicate()
                    _summary(raw, answer_ms)
            cpu2 = crewdesk.cpu_seconds()
            await asyncio.gather(*(s.close() for s in sockets))
            await asyncio.sleep(2.0)
            cpu3 = crewdesk.cpu_seconds()
            print(f"round {round_ + 1}: {opened} opened ({errors} failed) in {t1 - t0:.1f} s "
                  f"({opened / (t1 - t0 - 0.5):.0f}/s at {args.concurrency} at once); "
                  f"server CPU per handshake {handshake_ms:.2f} ms, per close {1000 * (cpu3 - cpu2) / max(opened, 1):.2f}"
                  f" ms{answer}; load {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    finally:
        crewdesk.stop()
        upstream.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--ask", action="store_true")
    parser.add_argument("--py-spy", default=os.environ.get("PY_SPY", ""))
    args = parser.parse_args()
    if args.profile and not args.py_spy:
        from profile_crewdesk import py_spy

        args.py_spy = str(py_spy())
    raise_fd_limit(2 * args.sockets + 1024)
    with bench_stack(), tempfile.TemporaryDirectory(prefix="bench-ws-") as tmp:
        fixture = crewdesk_fixture()
        asyncio.run(main_async(args, Path(tmp), fixture))


if __name__ == "__main__":
    main()
