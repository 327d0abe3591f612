"""What the gateway adds to an LLM call, measured side by side in one run.

The same chat requests go (a) straight to the fake OpenAI-compatible upstream and (b) through Crewdesk's
`/v1/chat/completions` on a real daphne (API-key auth, rate limits, model resolution, PII masking, circuit
breaker, ledger row with encrypted input and output, written just after the answer for whole calls), both
with the official `openai` SDK over keep-alive
connections, interleaved so that machine noise hits both equally. The cache is bypassed: every gateway call
goes upstream. Prints p50/p95 of each and of the difference, for whole non-streaming calls and for the time to
the first token of streams.

    python bench/gateway_overhead.py [--requests 1000]
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from stack import BASE_DIR, bench_stack


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()

    upstream_port, web_port = free_port(), free_port()
    processes: list[subprocess.Popen[bytes]] = []
    with bench_stack(LLM_OPENAI_BASE_URL=f"http://127.0.0.1:{upstream_port}/v1", LLM_OPENAI_API_KEY="sk-bench"):
        try:
            run(args.requests, upstream_port, web_port, processes)
        finally:
            for process in processes:
                process.terminate()
                process.wait(10)


def run(requests: int, upstream_port: int, web_port: int, processes: list[subprocess.Popen[bytes]]) -> None:
    from accounts.models import Organization
    from accounts.permissions import ROLE_SCOPES, Principal
    from accounts.services import api_key_create
    from billing.models import OrgBilling, Plan
    from saas.llm.models import ModelConfig

    org, _ = Organization.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    # A plan with overage and no spend cap: thousands of requests without a quota refusal (quotas still apply).
    OrgBilling.objects.for_org(org).update_or_create(
        organization=org, defaults={"plan": Plan.objects.get(slug="team"), "status": "active", "spend_cap_usd": None}
    )
    ModelConfig.objects.update_or_create(
        alias="bench-small", defaults={"upstream": "openai", "upstream_model": "fake-small", "context_window": 8192}
    )
    key = api_key_create(
        principal=Principal(organization=org, scopes=ROLE_SCOPES["owner"]), name="bench", scopes=["ask"]
    )
    env = {
        **os.environ,
        "RATE_LIMIT_API_KEY": "1000000/minute",
        "RATE_LIMIT_ORG": "1000000/minute",
        **{f"RATE_LIMIT_{e}_{p}": "1000000/minute" for e in ("CHAT_COMPLETIONS", "EMBEDDINGS") for p in ("ORG", "KEY")},
        **({"PGOPTIONS": os.environ["BENCH_PGOPTIONS"]} if os.environ.get("BENCH_PGOPTIONS") else {}),
    }
    processes.append(subprocess.Popen([sys.executable, "-m", "saas.llm.fake_upstream", "--port", str(upstream_port)],
                                      cwd=BASE_DIR, stdout=subprocess.DEVNULL))  # fmt: skip
    processes.append(subprocess.Popen([shutil.which("daphne") or str(Path(sys.executable).parent / "daphne"),
                                       "-b", "127.0.0.1", "-p", str(web_port), "saas.asgi:application"],
                                      cwd=BASE_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
    wait_http(f"http://127.0.0.1:{upstream_port}/v1/models")
    wait_http(f"http://127.0.0.1:{web_port}/healthz")

    import openai

    direct = openai.OpenAI(base_url=f"http://127.0.0.1:{upstream_port}/v1", api_key="sk-bench", max_retries=0)
    gateway = openai.OpenAI(base_url=f"http://127.0.0.1:{web_port}/v1", api_key=key.secret, max_retries=0,
                            default_headers={"X-Crewdesk-Cache": "bypass"})  # fmt: skip
    messages: Any = [{"role": "user", "content": "Summarise the quarterly report for the team, please."}]

    def call(client: openai.OpenAI, model: str) -> float:
        started = time.perf_counter()
        client.chat.completions.create(model=model, messages=messages)
        return (time.perf_counter() - started) * 1000

    def ttft(client: openai.OpenAI, model: str) -> float:
        started = time.perf_counter()
        stream: Any = client.chat.completions.create(model=model, messages=messages, stream=True)
        first = None
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = (time.perf_counter() - started) * 1000
        assert first is not None
        return first

    import httpx2

    web = httpx2.Client(base_url=f"http://127.0.0.1:{web_port}")

    def healthz() -> float:
        started = time.perf_counter()
        web.get("/healthz").raise_for_status()
        return (time.perf_counter() - started) * 1000

    for _ in range(20):  # warm up both paths (connections, caches, JIT-less imports)
        call(direct, "fake-small")
        call(gateway, "bench-small")
        ttft(direct, "fake-small")
        ttft(gateway, "bench-small")

    results: dict[str, dict[str, list[float]]] = {
        "call": {"direct": [], "gateway": []},
        "ttft": {"direct": [], "gateway": []},
    }
    floor: list[float] = []
    for _ in range(requests):
        floor.append(healthz())
        results["call"]["direct"].append(call(direct, "fake-small"))
        results["call"]["gateway"].append(call(gateway, "bench-small"))
        results["ttft"]["direct"].append(ttft(direct, "fake-small"))
        results["ttft"]["gateway"].append(ttft(gateway, "bench-small"))

    print(f"\nGateway overhead, {requests} requests per path, interleaved (ms)\n")
    print(
        f"{'measure':<26}{'direct p50':>11}{'gateway p50':>13}{'added p50':>11}{'direct p95':>12}{'gateway p95':>13}{'added p95':>11}"
    )
    for name, label in (("call", "non-streaming call"), ("ttft", "time to first token")):
        d, g = results[name]["direct"], results[name]["gateway"]
        added = [b - a for a, b in zip(d, g, strict=True)]
        print(f"{label:<26}{statistics.median(d):>11.2f}{statistics.median(g):>13.2f}{statistics.median(added):>11.2f}"
              f"{percentile(d, 0.95):>12.2f}{percentile(g, 0.95):>13.2f}{percentile(added, 0.95):>11.2f}")  # fmt: skip
    print(
        f"{'(daphne+Django floor: /healthz)':<26}{'':>11}{statistics.median(floor):>13.2f}{'':>11}{'':>12}{percentile(floor, 0.95):>13.2f}"
    )
    from saas.llm.models import LLMCall

    # Non-streaming rows are written just after each answer: every call must still have one.
    time.sleep(0.5)
    written = LLMCall.all_orgs.filter(api_key=key.api_key, status="ok").count()
    print(f"\nledger rows of this run: {written} of {2 * (20 + requests)} gateway calls")


if __name__ == "__main__":
    main()
