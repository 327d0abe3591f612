"""Under load (#19): websocket chats stream on the event loop (saas/llm/gateway_async), holding no thread while
they wait on the model: with more chats than the stream pool has threads, every chat gets its answer, none of
them from the stream pool (only answers grounded in documents use it) or asyncio's default pool."""

import json
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from websockets.sync.client import connect

from agents.models import Conversation
from tests.accounts.factories import MembershipFactory
from tests.agents.test_chat import _cookie
from tests.conftest import running_daphne

CHATS = 24
STREAM_THREADS = 4  # fewer than the chats: had they needed a thread each, most would have waited their turn
REPLY = "The quick brown fox jumps over the lazy dog."


def _chat(server, cookie, conversation_id) -> tuple[str, str]:
    """(status of the answer, its text)."""
    url = f"ws://{server.host}:{server.port}/ws/chat/{conversation_id}/"
    with connect(url, additional_headers={"Cookie": cookie}, origin=server.url, open_timeout=60) as ws:
        ws.send(json.dumps({"type": "ask", "content": "Tell me a story", "model": "test-small"}))
        parts = []
        while True:
            event = json.loads(ws.recv(timeout=120))
            if event["type"] == "delta":
                parts.append(event["text"])
            elif event["type"] == "done":
                return event["status"], "".join(parts)
            elif event["type"] == "error":
                return "error: " + event["error"]["code"], "".join(parts)


def _threads(server) -> dict[str, int]:
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    return {pool: int(float(n)) for pool, n in re.findall(r'^crewdesk_threads\{pool="([^"]+)"\} (\S+)$', text, re.M)}


@pytest.mark.live
@pytest.mark.timeout(900)
@pytest.mark.django_db(transaction=True)
def test_concurrent_chats_all_answer_without_a_thread_each(fake, models, tmp_path, fake_server):
    members = [MembershipFactory(role="member") for _ in range(CHATS)]
    conversations = [Conversation.all_orgs.create(organization=m.organization, user=m.user).pk for m in members]
    cookies = [_cookie(m.user) for m in members]  # signed in here: the clients' threads only connect
    fake.config(latency=0.5, token_rate=10)  # each answer takes a while: the chats overlap
    with running_daphne(tmp_path, fake_server, LLM_STREAM_THREADS=str(STREAM_THREADS)) as server:
        with ThreadPoolExecutor(CHATS) as clients:
            outcomes = list(clients.map(lambda pair: _chat(server, *pair), zip(cookies, conversations, strict=True)))
        threads = _threads(server)

    assert outcomes == [("complete", REPLY)] * CHATS
    # No answer held a thread of the stream pool; nothing ran in asyncio's default pool. (Before, each answer
    # streamed from one stream-pool thread: threads["stream"] was STREAM_THREADS here.)
    assert threads["stream"] == 0
    assert threads["asyncio_default"] == 0
    assert threads["websocket_db"] > 0
