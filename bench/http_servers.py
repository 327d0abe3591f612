"""What the HTTP server itself costs per request: daphne against uvicorn (httptools, uvloop), side by side.

#19 asks whether uvicorn should serve HTTP alongside daphne. Both serve the same minimal ASGI application (it
reads the body and answers a small JSON document, as the gateway's endpoints do, with nothing of Crewdesk's
behind it), so what is measured is the server: parsing, the event loop, the ASGI plumbing. Rounds interleave the
sides; each prints requests/s and the server process's CPU per request (from /proc, which holds on a shared
machine where wall-clock figures do not) at each client count.

- **daphne**: `python -m daphne`, as `saas.core.http_server` runs it (Twisted on the asyncio reactor);
- **uvicorn**: `uvicorn --http httptools --loop uvloop`, installed on first use into bench/.venv-tools (never the
  project's venv).

    python bench/http_servers.py [--clients 1,8,32] [--seconds 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import aiohttp

TOOLS_VENV = Path(__file__).resolve().parent / ".venv-tools"
UVICORN = ["uvicorn==0.54.0", "uvloop==0.23.0", "httptools==0.9.0"]
BODY = {"model": "m", "messages": [{"role": "user", "content": "Summarise the quarterly report, please."}]}

APP = """
async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = b'{"object": "chat.completion", "received": %d}' % len(body)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})
"""


def tools_python() -> Path:
    python = TOOLS_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TOOLS_VENV)], check=True)
    check = subprocess.run([str(python), "-c", "import uvicorn, uvloop, httptools"], capture_output=True)
    if check.returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *UVICORN], check=True)
    return python


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(side: str, app_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    if side == "daphne":
        command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "app:application"]
    else:
        command = [str(tools_python()), "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--http",
                   "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning", "app:application"]  # fmt: skip
    process = subprocess.Popen(command, cwd=app_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process, port
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"{side} did not start")


async def load(port: int, pid: int, clients: int, seconds: float) -> tuple[float, float, int]:
    """(requests/s, server CPU ms per request, errors) over `seconds`, after one second of warm-up."""
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    done = errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:

        async def client(until: float) -> None:
            nonlocal done, errors
            while time.monotonic() < until:
                async with session.post(url, json=BODY) as response:
                    await response.read()
                    done += 1
                    errors += response.status != 200

        await asyncio.gather(*(client(time.monotonic() + 1) for _ in range(clients)))
        done = errors = 0
        cpu, started = cpu_seconds(pid), time.monotonic()
        await asyncio.gather(*(client(time.monotonic() + seconds) for _ in range(clients)))
        elapsed, cpu = time.monotonic() - started, cpu_seconds(pid) - cpu
    return done / elapsed, 1000 * cpu / max(done, 1), errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    counts = [int(count) for count in args.clients.split(",")]
    sides = ["daphne", "uvicorn"]
    tools_python()  # installed before anything is timed
    results: dict[tuple[str, int], list[tuple[float, float, int]]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as app_dir:
        Path(app_dir, "app.py").write_text(APP)
        for round_number in range(args.rounds):
            for side in sides if round_number % 2 == 0 else reversed(sides):
                process, port = start(side, Path(app_dir))
                try:
                    for clients in counts:
                        results[side, clients].append(asyncio.run(load(port, process.pid, clients, args.seconds)))
                finally:
                    process.terminate()
                    process.wait(10)
    print(f"load average {os.getloadavg()[0]:.2f}; {args.rounds} interleaved rounds of {args.seconds:g} s; median")
    print(f"{'':32}" + "".join(f"{side:>22}" for side in sides))
    for label, index, form in (("requests/s", 0, "{:.0f}"), ("server CPU ms/request", 1, "{:.3f}")):
        cells = []
        for side in sides:
            values = [form.format(sorted(run[index] for run in results[side, c])[args.rounds // 2]) for c in counts]
            cells.append("/".join(values))
        print(f"{label + ' at ' + '/'.join(map(str, counts)):32}" + "".join(f"{cell:>22}" for cell in cells))
    errors = {side: sum(run[2] for c in counts for run in results[side, c]) for side in sides}
    print(f"{'errors':32}" + "".join(f"{errors[side]:>22}" for side in sides))


if __name__ == "__main__":
    main()
