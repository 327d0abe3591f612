"""Where a gateway call's CPU goes, step by step, measured inside the server with per-thread CPU clocks.

A sampling profiler (py-spy) on a machine whose cores are shared charges a thread for the time it waits to be
scheduled while holding the GIL, which inflates whatever runs right after a thread switch. Here each step is
wrapped (in the benchmark's server process only) and charged `time.thread_time()`, the CPU its thread used.
Steps nest: each figure includes the steps listed under it. What no request thread used (HTTP parsing, the
event loop, ASGI glue, thread switches) is the process's CPU minus the request threads'.

    python bench/step_server.py <daphne arguments>     (quick_cpu.py --steps starts Crewdesk this way)

The totals are written to $BENCH_STEP_FILE (JSON) twice a second.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
import threading
import time
from collections import defaultdict
from typing import Any

# (module, attribute path, label); nested steps follow their parent, indented by two spaces per level. Steps of
# the sync path (Django's handler, LLM_ASYNC_GATEWAY=false) and of the async path (saas/llm/asgi.py) are both
# listed; a path's steps show 0 runs/call when the other one served. A coroutine's CPU is what its thread used
# while it ran (each resumption timed), not the time it waited.
STEPS = [
    ("asgiref.sync", "SyncToAsync.thread_handler", "worker threads, all hops"),
    ("saas.llm.gateway_async", "_in_thread", "worker threads, all hops"),  # the async path's hops
    ("saas.llm.api", "OpenAICompatibleView.dispatch", "  DRF view (dispatch)"),
    ("rest_framework.views", "APIView.perform_authentication", "    API key authentication"),
    ("saas.core.api", "enforce_rate_limits", "    rate limits"),
    ("saas.llm.openai_compat", "validated_completion", "    request validation (pydantic)"),
    ("saas.llm.gateway", "chat", "    gateway.chat (sync path)"),
    ("saas.llm.gateway_async", "admit", "    gateway_async.admit (async path)"),
    ("saas.llm.call", "Call.prepare", "      prepare: model, policy, guardrails, PII, standing"),
    ("saas.llm.gateway", "_look_up", "      cache key / lookup"),
    ("saas.llm.call", "Call.reserve", "      quota reservation"),
    ("saas.llm.routing", "_permit", "      breaker permit (sync)"),
    ("saas.llm.structured", "complete", "      upstream call (sync)"),
    ("saas.llm.routing", "_breaker_note", "      breaker outcome (sync)"),
    ("saas.llm.gateway_async", "_answered", "    end of the call (async path's second hop)"),
    ("saas.llm.call", "Call.finish", "      finish: ledger entry, settle, metrics"),
    ("saas.llm.ledger", "submit", "        ledger stream (XADD)"),
    ("saas.core.crypto", "encrypt", "        Fernet (prompt and answer)"),
    ("billing.quota", "release", "        quota settle"),
    ("saas.llm.metrics", "observe", "        Prometheus"),
    ("saas.llm.openai_compat", "completion_body", "    response body"),
    ("rest_framework.renderers", "JSONRenderer.render", "  JSON rendering"),
    ("django.http.response", "HttpResponseBase.close", "  response close (request_finished, after-send)"),
    ("saas.llm.asgi", "GatewayHandler.handle", "event loop: the async route (request, view, send)"),
    ("saas.llm.api_async", "chat_completions", "  async view, on the loop (hops not included)"),
    ("saas.llm.routing", "_apermit", "    breaker permit (asyncio Redis)"),
    ("saas.llm.structured", "acomplete", "    upstream call (asyncio pool)"),
    ("saas.llm.routing", "_abreaker_note", "    breaker outcome (asyncio Redis)"),
    ("saas.llm.gateway_async", "_aanswered", "    end of the call on the loop (batched ledger, no hop)"),
    ("saas.llm.ledger", "aenqueue", "      ledger script: XADD, settle, cache entry (asyncio Redis)"),
]

_totals: dict[str, float] = defaultdict(float)
_counts: dict[str, int] = defaultdict(int)
_lock = threading.Lock()
_local = threading.local()
_extra: list[str] = []


def _add(label: str, spent: float) -> None:
    with _lock:
        _totals[label] += spent


class _TimedCoroutine:
    """A coroutine whose every resumption is charged to `label` (its thread's CPU while it ran)."""

    def __init__(self, label: str, coroutine: Any) -> None:
        self.label, self.coroutine = label, coroutine

    def __await__(self) -> Any:
        value: Any = None
        error: BaseException | None = None
        with _lock:
            _counts[self.label] += 1
        while True:
            started = time.thread_time()
            try:
                step = self.coroutine.throw(error) if error is not None else self.coroutine.send(value)
            except StopIteration as stop:
                _add(self.label, time.thread_time() - started)
                return stop.value
            except BaseException:
                _add(self.label, time.thread_time() - started)
                raise
            _add(self.label, time.thread_time() - started)
            try:
                value, error = (yield step), None
            except BaseException as exc:  # handed to the coroutine, as await does
                value, error = None, exc


def _timed(label: str, fn: Any) -> Any:
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def timed_coroutine(*args: Any, **kwargs: Any) -> Any:
            return await _TimedCoroutine(label, fn(*args, **kwargs))

        return timed_coroutine

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        active = getattr(_local, "active", None)
        if active is None:
            active = _local.active = set()
        if label in active:  # recursion (a step calling itself): count the outer call only
            return fn(*args, **kwargs)
        active.add(label)
        started = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            spent = time.thread_time() - started
            active.discard(label)
            with _lock:
                _totals[label] += spent
                _counts[label] += 1

    return wrapper


def install() -> None:
    for module_name, path, label in STEPS:
        module = importlib.import_module(module_name)
        owner: Any = module
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent, None)
        if owner is None or not hasattr(owner, name):
            continue  # a step this version of the code does not have (a before/after comparison)
        setattr(owner, name, _timed(label, getattr(owner, name)))
    # Each middleware's own hooks (not what it calls next), listed after the steps.
    from django.conf import settings
    from django.utils.module_loading import import_string

    for dotted in settings.MIDDLEWARE:
        middleware = import_string(dotted)
        if not isinstance(middleware, type):
            continue
        for hook in ("process_request", "process_view", "process_response"):
            if hook in vars(middleware) or any(hook in vars(base) for base in middleware.__mro__[1:-1]):
                label = f"  middleware {middleware.__name__}.{hook}"
                setattr(middleware, hook, _timed(label, getattr(middleware, hook)))
                _extra.append(label)
    dump_to = os.environ.get("BENCH_STEP_FILE")
    if dump_to:
        threading.Thread(target=_dump, args=(dump_to,), daemon=True).start()


def _dump(path: str) -> None:
    while True:
        with _lock:
            labels = list(dict.fromkeys([label for _, _, label in STEPS] + _extra))  # a label may have two steps
            data = {"cpu": dict(_totals), "calls": dict(_counts), "labels": labels}
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
        time.sleep(0.5)


def read(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            return json.load(f)  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {"cpu": {}, "calls": {}, "labels": []}


def table(before: dict[str, Any], after: dict[str, Any], *, calls: int, process_cpu: float) -> str:
    lines = [f"{'CPU per call by step (thread CPU clock)':<62}{'ms/call':>9}{'runs/call':>11}"]
    n = max(calls, 1)
    for label in after["labels"]:
        spent = after["cpu"].get(label, 0.0) - before["cpu"].get(label, 0.0)
        runs = after["calls"].get(label, 0) - before["calls"].get(label, 0)
        lines.append(f"{label:<62}{1000 * spent / n:>9.2f}{runs / n:>11.1f}")
    threads = after["cpu"].get(STEPS[0][2], 0.0) - before["cpu"].get(STEPS[0][2], 0.0)
    lines.append(f"{'main thread: event loop, HTTP (Twisted/daphne), ASGI (process - threads)':<62}"
                 f"{1000 * (process_cpu - threads) / n:>9.2f}")  # fmt: skip
    lines.append(f"{'whole process':<62}{1000 * process_cpu / n:>9.2f}")
    return "\n".join(lines)
