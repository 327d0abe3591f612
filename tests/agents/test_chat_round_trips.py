"""What one websocket chat answer costs the web process in round trips (#19): the SQL statements and Redis
commands from the frame that asks to the last event, counted in every thread of the process. The answer is the
first of a new conversation (as most are: it also titles the conversation), with the process warmed up (its
memos loaded) by an earlier conversation.

Before: 19 statements and 3 commits (the turn's start read whether the conversation was empty, inserted its
two messages one by one, re-read the title twice; the answer's end read the conversation and counted its
questions to decide on the title, and wrote the trace in a transaction of its own), and 14 Redis commands (a
GET per memo read). Now the turn's start reads the earlier turns once (the model's context, and whether there
are any), inserts both messages in one statement and updates the conversation in one that returns its title
and whether it draws on collections; the title decision is what the start knew; the trace is written with the
ledger row; the memo versions are read in one MGET. Since the answer's ledger row goes through the ledger stream
(as every API call's does), written in batches by the ledger writer, the web process sends 6 statements and one
commit (was 13 and 3) and 6 Redis commands (was 7): the row, its usage row and the trace are no longer inserted
there, and the exact cache entry travels in the ledger's script."""

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
import redis.asyncio.client as async_redis
import redis.client as sync_redis
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db.backends import utils as db_utils
from django.db.backends.base.base import BaseDatabaseWrapper
from django.test import Client

from agents import privacy
from agents.models import Conversation, Message
from saas.core import threads
from saas.core.privacy import Subject
from saas.llm import ledger
from saas.llm.models import LLMCall
from saas.llm.trace_models import Trace
from tests.accounts.factories import MembershipFactory

pytestmark = pytest.mark.django_db(transaction=True)

STATEMENTS = [
    "SELECT agents_conversation",  # the access check before the frame (the session, the member, the conversation)
    "SELECT agents_message",  # the earlier turns (none: the conversation is empty, so titled from the question)
    "INSERT agents_message",  # the question and the empty answer
    "UPDATE agents_conversation",  # updated, titled; returns the title and whether collections are picked
    "COMMIT",
    "UPDATE agents_message",  # the answer's text and outcome, linked to its ledger row's id
]
REDIS_COMMANDS = {
    "GET session": 1,  # the session behind the socket, checked before the frame (cached_db)
    "MGET memo": 1,  # every memo's version (model registry, org settings, billing, prompts)
    "GET exact cache": 1,
    # A quota place taken; then one script: the ledger entry (the row, its usage row and the turn's trace, for
    # the ledger writer), the place settled and the answer kept in the exact cache.
    "EVALSHA": 2,
    # (no pipeline: the model's circuit breaker was read clean by the warm-up answer, and a clean reading is
    # trusted for LLM_BREAKER["clean_read_seconds"] in the process)
    "LPUSH": 1,  # the title task queued
}


def _kind(sql: str) -> str:
    """ "SELECT agents_message" from the statement (its verb and first table), "COMMIT", "SAVEPOINT"."""
    words = sql.replace('"', "").replace("(", " ").split()
    verb = words[0].upper()
    if verb in ("INSERT", "UPDATE"):
        table = words[2] if verb == "INSERT" else words[1]
    elif verb == "SELECT":
        table = words[words.index("FROM") + 1] if "FROM" in words else ""
        table = table.split(".")[0]
    else:
        return verb
    return f"{verb} {table}"


def _redis_kind(args: tuple[Any, ...]) -> str:
    name = str(args[0]).upper()
    key = str(args[1]) if len(args) > 1 else ""
    if name in ("GET", "SET"):
        return f"{name} " + ("session" if "session" in key else "exact cache" if ":exact:" in key else key)
    if name == "MGET":
        return "MGET memo" if ":memo:" in key else f"MGET {key}"
    return name


@contextmanager
def counted() -> Iterator[tuple[list[str], Counter[str], Counter[str]]]:
    """Every statement Django sends (and every commit) and every Redis command, in any thread, and the hops to
    a worker thread (by pool)."""
    statements: list[str] = []
    commands: Counter[str] = Counter()
    hops: Counter[str] = Counter()
    lock = threading.Lock()
    patches: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, wrap: Any) -> None:
        original = getattr(owner, name)
        setattr(owner, name, wrap(original))
        patches.append((owner, name, original))

    def statement(original: Any) -> Any:
        def run(self: Any, sql: Any, *args: Any, **kwargs: Any) -> Any:
            with lock:
                statements.append(_kind(str(sql)))
            return original(self, sql, *args, **kwargs)

        return run

    def commit(original: Any) -> Any:
        def run(self: Any) -> Any:
            with lock:
                statements.append("COMMIT")
            return original(self)

        return run

    def command(original: Any) -> Any:
        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            with lock:
                commands[_redis_kind(args)] += 1
            return original(self, *args, **kwargs)

        return run

    def acommand(original: Any) -> Any:
        async def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            with lock:
                commands[_redis_kind(args)] += 1
            return await original(self, *args, **kwargs)

        return run

    def pipeline(original: Any) -> Any:
        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            with lock:
                commands["pipeline"] += 1
            return original(self, *args, **kwargs)

        return run

    def apipeline(original: Any) -> Any:
        async def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            with lock:
                commands["pipeline"] += 1
            return await original(self, *args, **kwargs)

        return run

    def pool_hop(original: Any) -> Any:
        async def run(pool: str, *args: Any, **kwargs: Any) -> Any:
            hops[pool] += 1
            return await original(pool, *args, **kwargs)

        return run

    def gateway_hop(original: Any) -> Any:
        async def run(*args: Any, **kwargs: Any) -> Any:
            hops["gateway"] += 1
            return await original(*args, **kwargs)

        return run

    patch(threads, "run_in", pool_hop)
    patch(threads, "hop", gateway_hop)
    patch(db_utils.CursorWrapper, "execute", statement)
    patch(db_utils.CursorWrapper, "executemany", statement)
    patch(BaseDatabaseWrapper, "_commit", commit)
    patch(sync_redis.Redis, "execute_command", command)
    patch(sync_redis.Pipeline, "execute", pipeline)
    patch(async_redis.Redis, "execute_command", acommand)
    patch(async_redis.Pipeline, "execute", apipeline)
    try:
        yield statements, commands, hops
    finally:
        for owner, name, original in reversed(patches):
            setattr(owner, name, original)


def _cookie(user: Any) -> bytes:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


async def _answer(conversation: Conversation, cookie: bytes, *, count: bool) -> tuple[dict[str, Any], Any]:
    """Asks once over the websocket (in this process, as under daphne); the last event, and what was counted
    from the frame to the last event (and the work right after it) when `count`."""
    from saas.asgi import application

    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver"), (b"cookie", cookie)]
    communicator = WebsocketCommunicator(application, f"/ws/chat/{conversation.pk}/", headers=headers)
    communicator.scope["client"] = ("127.0.0.1", 50000)
    connected, _ = await communicator.connect(timeout=30)
    assert connected
    try:
        with counted() if count else _nothing() as found:
            frame = {"type": "ask", "content": f"What changed on {time.time_ns()}?", "model": "test-small"}
            await communicator.send_to(text_data=json.dumps(frame))
            while (event := json.loads(await communicator.receive_from(timeout=30)))["type"] not in ("done", "error"):
                pass
            await asyncio.sleep(0.5)  # what follows the last event (nothing should)
        return event, found
    finally:
        await communicator.disconnect(timeout=5)


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def _in_a_loop_thread(coroutine: Any) -> Any:
    with ThreadPoolExecutor(1) as pool:  # a loop of its own, as under daphne
        return pool.submit(asyncio.run, coroutine).result()


def test_an_answer_takes_six_statements_and_six_redis_commands(fake, models, settings):
    settings.LLM_BREAKER = {**settings.LLM_BREAKER, "clean_read_seconds": 600}  # however slow the machine
    settings.LLM_LEDGER = {**settings.LLM_LEDGER, "batched": True}  # as deployed: rows go through the stream
    member = MembershipFactory(role="member")
    cookie = _cookie(member.user)
    # Two warm-up answers (each queues a title task, so Celery's queue is declared): after an earlier test
    # flushed the database, the first one seeds the default plans and prompts again, and those saves make the
    # memos it had just loaded stale; the second loads them for good.
    for _ in range(2):
        warm = Conversation.all_orgs.create(organization=member.organization, user=member.user)
        _in_a_loop_thread(_answer(warm, cookie, count=False))  # the memos loaded, the scripts known
    conversation = Conversation.all_orgs.create(organization=member.organization, user=member.user)

    event, (statements, commands, hops) = _in_a_loop_thread(_answer(conversation, cookie, count=True))

    assert event["type"] == "done" and event["status"] == "complete", event
    answer = Message.all_orgs.get(pk=event["message"])
    ledger.drain()  # what the ledger writer does moments later
    call = LLMCall.all_orgs.get(pk=answer.llm_call_id)  # one ledger row, linked, with the turn's trace
    assert Trace.all_orgs.get(pk=call.trace_id).kind == "chat"
    conversation.refresh_from_db()
    assert conversation.title.startswith("What changed on") and conversation.title_source == "question"
    assert statements == STATEMENTS
    # (a PING is redis-py's health check of a connection idle for 30 s: upkeep, not the answer's work)
    assert {kind: n for kind, n in commands.items() if kind != "PING"} == REDIS_COMMANDS
    # The frame's access check rides in the turn's start: one hop before the model is asked, one at the end.
    assert hops == {"websocket_db": 1, "gateway": 1}


def test_erasing_a_conversation_blanks_its_answers_row_even_while_it_waits_in_the_ledger_stream(fake, models, settings):
    settings.LLM_LEDGER = {**settings.LLM_LEDGER, "batched": True}
    member = MembershipFactory(role="member")
    conversation = Conversation.all_orgs.create(organization=member.organization, user=member.user)
    event, _ = _in_a_loop_thread(_answer(conversation, _cookie(member.user), count=False))
    call_id = Message.all_orgs.get(pk=event["message"]).llm_call_id
    assert call_id and not LLMCall.all_orgs.filter(pk=call_id).exists()  # linked, still in the stream

    subject = Subject(user_id=member.user_id, org_id=member.organization_id, pseudonym="someone", texts=(),
                      transfer_content=False)  # fmt: skip
    while privacy.erase_user(subject=subject, batch_size=10):
        pass
    ledger.drain()  # whatever the writer still held
    call = LLMCall.all_orgs.get(pk=call_id)
    assert (call.user_id, call.input_encrypted, call.output_encrypted) == (None, "", "")
    assert not Conversation.all_orgs.filter(pk=conversation.pk).exists()
