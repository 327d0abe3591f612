"""Where Crewdesk's CPU per gateway call goes: py-spy samples of the server process under load, per step.

py-spy (installed on first use into bench/.venv-tools, never the project's venv) samples the server's Python
stacks from outside, without changing the server, only while a thread holds the GIL (`--gil`: CPU, not waiting).
Each sample is counted twice:

- by *component*, after the innermost frame (the code on the CPU): Twisted/daphne, asyncio, Django, the psycopg
  driver, the Redis client, the openai/httpx client, Prometheus, JSON, logging, cryptography, our own code, ...
- by *step*, after the innermost frame of our own code (saas/, accounts/, billing/, ...) on the stack: the
  function of ours that caused that CPU, whatever library it went through; samples with none of our frames on
  the stack are the server's own work (reading and writing HTTP, the event loop, Channels/ASGI glue).

Shares are turned into milliseconds per call with the CPU per call measured in the same slice.
Used by gateway_overhead.py --profile SECONDS; `python bench/profile_crewdesk.py FILE.raw CPU_MS` re-reads a file.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

TOOLS_VENV = Path(__file__).resolve().parent / ".venv-tools"
OUR_CODE = re.compile(
    r"(?:^|/)(saas|accounts|billing|agents|documents|analytics)/(?!core/(?:http|api)_server)[\w/]+\.py"
)


def _under(*packages: str) -> re.Pattern[str]:
    """A frame's file (py-spy prints it relative to its sys.path entry) in one of these packages or modules."""
    return re.compile(r"(?:^|/)(?:" + "|".join(packages) + r")(?:/|\.py$)")


COMPONENTS = [  # first match on the innermost frame's file wins
    ("Twisted / daphne (HTTP server)", _under("twisted", "daphne", "autobahn", "txaio", "zope")),
    ("uvicorn / httptools (API server)", _under("uvicorn", "httptools")),
    ("asyncio event loop", _under("asyncio", "selectors", "concurrent/futures", "uvloop")),
    ("threads (asgiref sync_to_async, locks)", _under("asgiref", "threading", "queue")),
    ("Channels", _under("channels")),
    ("Prometheus metrics", _under("prometheus_client", "django_prometheus")),
    ("psycopg (database driver + pool)", _under("psycopg", "psycopg_pool", "psycopg_binary")),
    ("Django ORM", _under("django/db")),
    ("Django (request, middleware, other)", _under("django", "rest_framework", "drf_spectacular", "allauth")),
    ("Redis client", _under("redis", "hiredis")),
    ("openai SDK / httpx / httpcore", _under("openai", "httpx", "httpx2", "httpcore", "httpcore2", "h11", "anyio")),
    ("JSON", _under("json", "orjson")),
    ("logging", _under("logging", "structlog", "pythonjsonlogger")),
    ("cryptography", _under("cryptography")),
    ("pydantic", _under("pydantic", "pydantic_core")),
    ("tokenizer", _under("tiktoken", "tokenizers", "transformers")),
    ("our code (its own lines)", OUR_CODE),
]
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> Path:
    binary = TOOLS_VENV / "bin" / "py-spy"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TOOLS_VENV)], check=True)
        subprocess.run([str(TOOLS_VENV / "bin" / "pip"), "install", "--quiet", "py-spy"], check=True)
    return binary


def _frames(stack: str) -> list[tuple[str, str]]:
    frames = []
    for raw in stack.split(";"):
        match = FRAME.match(raw.strip())
        frames.append((match["func"], match["file"]) if match else (raw.strip(), ""))
    return frames  # root first


def summarise(raw: str) -> tuple[Counter[str], Counter[str], int]:
    by_component: Counter[str] = Counter()
    by_step: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = _frames(stack)
        func, file = frames[-1]
        component = next((name for name, pattern in COMPONENTS if pattern.search(file)), None)
        by_component[component or f"other ({Path(file).name or func})"] += count
        ours = [(f, path) for f, path in frames if OUR_CODE.search(path)]
        if ours:
            f, path = ours[-1]
            module = OUR_CODE.search(path)
            by_step[f"{module.group(0).lstrip('/') if module else path}:{f}"] += count
        else:
            by_step["(server: HTTP, event loop, ASGI glue)"] += count
    return by_component, by_step, total


def print_summary(raw: str, cpu_ms_per_call: float, *, top: int = 18) -> None:
    by_component, by_step, total = summarise(raw)
    if not total:
        print("py-spy recorded no samples")
        return
    for title, counts in (("by component (innermost frame)", by_component),
                          ("by step (innermost frame of our code)", by_step)):  # fmt: skip
        print(f"\n{'CPU ' + title:<64}{'share':>8}{'ms/call':>10}")
        shown = 0.0
        for name, count in counts.most_common(top):
            share = count / total
            shown += share
            print(f"{name[:63]:<64}{100 * share:>7.1f}%{share * cpu_ms_per_call:>10.2f}")
        if shown < 0.999:
            print(f"{'(the rest)':<64}{100 * (1 - shown):>7.1f}%{(1 - shown) * cpu_ms_per_call:>10.2f}")
    print(f"({total} samples with the GIL held; {cpu_ms_per_call:.2f} ms of server CPU per call in this slice)")


async def profile_at(side: Any, *, clients: int, seconds: float, workdir: Path, run_slice: Callable[..., Any],
                     measure_cls: type) -> None:  # fmt: skip
    """Crewdesk under `clients` concurrent callers for `seconds`, sampled by py-spy; prints the two tables."""
    import httpx

    binary = py_spy()
    output = workdir / "crewdesk.pyspy.raw"
    pid = side.server.process.pid
    side.client = httpx.AsyncClient(headers=side.headers, timeout=60,
                                    limits=httpx.Limits(max_connections=clients, max_keepalive_connections=clients))  # fmt: skip
    await run_slice(side, clients, 2.0, measure_cls())  # warm again after the main run
    spy = await asyncio.create_subprocess_exec(
        str(binary), "record", "--pid", str(pid), "--rate", "250", "--gil", "--nonblocking", "--format", "raw",
        "--duration", str(int(seconds)), "--output", str(output),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await asyncio.sleep(0.5)
    measure = measure_cls()
    await run_slice(side, clients, seconds, measure)
    _, stderr = await spy.communicate()
    await side.client.aclose()
    if not output.exists():
        print(f"\npy-spy did not record: {stderr.decode(errors='replace').strip()[-400:]}")
        return
    cpu_ms = 1000 * measure.cpu / max(measure.calls, 1)
    print(f"\nProfile of Crewdesk at {clients} clients for {seconds:g} s: {measure.calls} calls, "
          f"{measure.calls / measure.seconds:.0f}/s, {sum(measure.errors.values())} errors (py-spy {binary})")  # fmt: skip
    print_summary(output.read_text(), cpu_ms)
    keep = Path(__file__).resolve().parent.parent / ".devdata" / "bench" / "crewdesk.pyspy.raw"
    keep.parent.mkdir(parents=True, exist_ok=True)
    keep.write_text(output.read_text())
    print(f"(raw stacks kept in {keep}: `python bench/profile_crewdesk.py {keep} {cpu_ms:.2f}` re-reads them)")


if __name__ == "__main__":
    print_summary(Path(sys.argv[1]).read_text(), float(sys.argv[2]))
