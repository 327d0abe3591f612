"""The web process's CPU per websocket handshake (and per close), and optionally where it goes (py-spy).

Opens `--sockets` browser-chat websockets (`/ws/chat/<conversation>/`, signed in, the page's Origin) on one
daphne process, `--concurrency` at a time, keeps them all open, then closes them; the server's CPU (user +
system, from /proc) is read before and after each half. CPU time holds on a shared machine where wall-clock
figures do not; the handshake rate at the given concurrency is printed too, for what it is worth.

    python bench/ws_handshake.py [--sockets 400] [--concurrency 16] [--profile]

`--profile` samples the server with py-spy during the opening half (bench/profile_crewdesk.py's summary:
CPU by component and by our own function).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from servers import crewdesk_fixture, raise_fd_limit, start_crewdesk, start_fake_upstream
from stack import bench_stack


def _conversations(fixture: dict[str, Any], count: int) -> list[str]:
    from agents.models import Conversation

    org, user = fixture["org"], fixture["user"]
    made = Conversation.objects.for_org(org).bulk_create(
        [Conversation(organization=org, user=user, model=fixture["model"]) for _ in range(count)]
    )
    return [str(c.pk) for c in made]


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


async def main_async(args: argparse.Namespace, workdir: Path, fixture: dict[str, Any]) -> None:
    upstream = start_fake_upstream(workdir)
    crewdesk = start_crewdesk(workdir, upstream)
    try:
        ws_base = crewdesk.url.replace("http://", "ws://") + "/ws/chat/"
        warm = await asyncio.to_thread(_conversations, fixture, 32)
        sockets, _ = await _open_all([f"{ws_base}{c}/" for c in warm], crewdesk.url, fixture["cookie"], 8)
        await asyncio.gather(*(s.close() for s in sockets))
        await asyncio.sleep(1)
        for round_ in range(args.rounds):
            ids = await asyncio.to_thread(_conversations, fixture, args.sockets)
            urls = [f"{ws_base}{c}/" for c in ids]
            spy = None
            if args.profile and round_ == args.rounds - 1:
                raw = workdir / "ws.pyspy.raw"
                spy = await asyncio.create_subprocess_exec(
                    args.py_spy, "record", "--pid", str(crewdesk.process.pid), "--rate", "250", "--gil", *(["--native"] if os.environ.get("PY_SPY_NATIVE") else []),
                    "--nonblocking", "--format", "raw", "--output", str(raw), stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                )  # fmt: skip
                await asyncio.sleep(1.0)
            cpu0, t0 = crewdesk.cpu_seconds(), time.perf_counter()
            sockets, errors = await _open_all(urls, crewdesk.url, fixture["cookie"], args.concurrency)
            await asyncio.sleep(0.5)  # the last handshakes' after-work (nothing should be left)
            cpu1, t1 = crewdesk.cpu_seconds(), time.perf_counter()
            if spy is not None:
                spy.send_signal(2)
                await spy.communicate()
            await asyncio.gather(*(s.close() for s in sockets))
            await asyncio.sleep(2.0)
            cpu2 = crewdesk.cpu_seconds()
            opened = len(sockets)
            print(f"round {round_ + 1}: {opened} opened ({errors} failed) in {t1 - t0:.1f} s "
                  f"({opened / (t1 - t0 - 0.5):.0f}/s at {args.concurrency} at once); "
                  f"server CPU per handshake {1000 * (cpu1 - cpu0) / max(opened, 1):.2f} ms, "
                  f"per close {1000 * (cpu2 - cpu1) / max(opened, 1):.2f} ms; load {os.getloadavg()[0]:.2f}",
                  flush=True)  # fmt: skip
            if spy is not None:
                from profile_crewdesk import print_summary

                print_summary(raw.read_text(), 1000 * (cpu1 - cpu0) / max(opened, 1), top=30)
                keep = Path(__file__).resolve().parent.parent / ".devdata" / "bench" / "ws_handshake.pyspy.raw"
                keep.parent.mkdir(parents=True, exist_ok=True)
                keep.write_text(raw.read_text())
                print(f"(raw stacks kept in {keep})")
    finally:
        crewdesk.stop()
        upstream.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
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
    sys.exit(main())
