"""Under load (#19): no request holds a database connection while it waits on a model.

A real API server (`python -m saas.core.api_server`, uvicorn: where developers' clients send /v1 calls) with the
connection pool at its default size, the real PostgreSQL, and the fake upstream answering slowly: 100 concurrent
5-second calls and 100 concurrent streams, every one on a fresh API key (the key is not in the server's memory:
it is read from the database, and its first use is written back), must all be answered. Before the fix, each of
them kept its pooled connection for the whole upstream call, and everything past the pool's ten waited
DATABASE_POOL_TIMEOUT and got a 500.
"""

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx2
import pytest

from saas.llm.models import LLMCall
from tests.accounts.conftest import issue_key
from tests.accounts.factories import OrganizationFactory
from tests.conftest import running_daphne

CALLS = 100
STREAMS = 100
KEYS_PER_ORG = 20  # the free plan's 200 requests per period are far away
REPLY = "The quick brown fox jumps over the lazy dog."


@dataclass
class Outcome:
    status: int
    text: str
    error: str = ""


async def _call(client: httpx2.AsyncClient, secret: str) -> Outcome:
    try:
        response = await client.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {secret}", "X-Crewdesk-Cache": "bypass"},
            json={"model": "test-large", "messages": [{"role": "user", "content": "Say something"}]},
        )
    except Exception as exc:
        return Outcome(0, "", repr(exc))
    if response.status_code != 200:
        return Outcome(response.status_code, "", response.text[:300])
    return Outcome(200, response.json()["choices"][0]["message"]["content"])


async def _stream(client: httpx2.AsyncClient, secret: str) -> Outcome:
    body = {"model": "test-small", "stream": True, "messages": [{"role": "user", "content": "Tell me a story"}]}
    headers = {"Authorization": f"Bearer {secret}", "X-Crewdesk-Cache": "bypass"}
    parts: list[str] = []
    try:
        async with client.stream("POST", "/v1/chat/completions", headers=headers, json=body) as response:
            if response.status_code != 200:
                return Outcome(response.status_code, "", (await response.aread()).decode()[:300])
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[len("data: ") :])
                if "error" in chunk:
                    return Outcome(200, "".join(parts), json.dumps(chunk["error"]))
                parts.extend(c["delta"].get("content") or "" for c in chunk["choices"])
    except Exception as exc:
        return Outcome(0, "".join(parts), repr(exc))
    return Outcome(200, "".join(parts))


async def _load(url: str, call_keys: list[str], stream_keys: list[str]) -> tuple[list[Outcome], list[Outcome]]:
    limits = httpx2.Limits(max_connections=CALLS + STREAMS + 10, max_keepalive_connections=0)
    async with httpx2.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        outcomes = await asyncio.gather(
            *(_call(client, secret) for secret in call_keys), *(_stream(client, secret) for secret in stream_keys)
        )
    return list(outcomes[: len(call_keys)]), list(outcomes[len(call_keys) :])


def _wait_for(probe, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(0.2)
    return False


def _server_errors(log: str) -> str:
    """The server's tracebacks, so a failure says why and not only that."""
    start = log.find("Traceback")
    return log[start : start + 6000] if start >= 0 else "no traceback in the server log"


def _summary(outcomes: list[Outcome]) -> str:
    failed = [o for o in outcomes if o.error or o.text != REPLY]
    kinds: dict[str, int] = {}
    for outcome in failed:
        kind = f"{outcome.status} {outcome.error[:80]}"
        kinds[kind] = kinds.get(kind, 0) + 1
    return f"{len(outcomes) - len(failed)} answered, {len(failed)} failed: {kinds}"


@pytest.mark.live
@pytest.mark.timeout(900)  # a loaded machine; the test itself waits on no clock
@pytest.mark.django_db(transaction=True)
def test_slow_model_calls_and_streams_on_fresh_keys_never_wait_for_a_database_connection(
    fake, models, tmp_path, fake_server
):
    orgs = [OrganizationFactory() for _ in range((CALLS + STREAMS) // KEYS_PER_ORG)]
    secrets = [issue_key(orgs[i // KEYS_PER_ORG], scopes=["ask"], name=f"load {i}").secret
               for i in range(CALLS + STREAMS)]  # fmt: skip
    # Every call waits 5 s for its answer; every stream waits 2 s for its first token, then gets one token
    # every half second (about 6.5 s in all).
    fake.script("fake-large", *[{"delay": 5.0}] * CALLS)
    fake.script("fake-small", *[{"delay": 2.0}] * STREAMS)
    fake.config(token_rate=2)
    # Its own server process: nothing else shares its pool, and no key is in its memory yet. The pool is at
    # its default size (DATABASE_POOL_MAX is not set for it).
    with running_daphne(tmp_path, fake_server, server_kind="api", LLM_MAX_RETRIES="0") as server:
        # A thread of its own: in the full suite the browser tests' event loop may be running in this one.
        with ThreadPoolExecutor(1) as pool:
            calls, streams = pool.submit(asyncio.run, _load(server.url, secrets[:CALLS], secrets[CALLS:])).result()
        # A call's ledger row is written just after its answer was sent: wait for them (a deadline, not a timing).
        recorded = _wait_for(lambda: LLMCall.all_orgs.filter(status="ok").count() >= CALLS + STREAMS)
        log = server.process.log()

    assert (_summary(calls), _summary(streams)) == (
        f"{CALLS} answered, 0 failed: {{}}",
        f"{STREAMS} answered, 0 failed: {{}}",
    ), _server_errors(log)
    assert "PoolTimeout" not in log
    # Every answer has its ledger row, written after the wait (the connection taken again for it).
    assert recorded
    assert LLMCall.all_orgs.filter(status="ok", stream=False).count() == CALLS
    assert LLMCall.all_orgs.filter(status="ok", stream=True).count() == STREAMS
