"""Handshakes under load (#18, #19). `make loadtest` lost websocket handshakes that daphne closed at its 5 s
connect timeout: Channels' session and auth middleware, and Channels' dispatch before every message of every
socket, ran their steps through sync_to_async on the process's one "thread-sensitive" thread, so every new
socket queued there behind all the other sockets' messages. Nothing in a handshake waits on that thread now:
these tests hold it busy and count the sockets that still connect (outcomes, not timings); the access checks
still run (a stranger's conversation, a missing or ended session are refused)."""

import asyncio
import contextlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import import_module
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from agents.models import Conversation
from tests.accounts.factories import MembershipFactory

pytestmark = pytest.mark.django_db(transaction=True)

SOCKETS = 12
HANDSHAKE_BOUND = 60  # seconds: only so a test of the old code ends; a working handshake takes milliseconds


def _run(coroutine: Any) -> Any:
    """On a loop of its own in a fresh thread, as under daphne: no outer async_to_sync, so sync_to_async's
    thread-sensitive calls go to the process's one single-thread executor."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


def _communicator(path: str, cookie: bytes | None) -> WebsocketCommunicator:
    from saas.asgi import application

    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
    if cookie is not None:
        headers.append((b"cookie", cookie))
    communicator = WebsocketCommunicator(application, path, headers=headers)
    communicator.scope["client"] = ("127.0.0.1", 50000)
    return communicator


async def _open(communicator: WebsocketCommunicator, first: str | None) -> str:
    """ "accepted" (and the first event was `first`), "refused <code>", or the exception's name."""
    try:
        connected, code = await communicator.connect(timeout=HANDSHAKE_BOUND)
        if not connected:
            return f"refused {code}"
        if first is not None:
            event = json.loads(await communicator.receive_from(timeout=HANDSHAKE_BOUND))
            if event["type"] != first:
                return f"first event {event['type']}"
        return "accepted"
    except BaseException as error:  # a handshake that never completed
        return type(error).__name__
    finally:
        with contextlib.suppress(BaseException):  # a consumer that ended (or never started) has nothing to close
            await communicator.disconnect(timeout=5)


async def _with_sync_thread_busy(sockets: list[tuple[WebsocketCommunicator, str | None]]) -> tuple[list[str], bool]:
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(timeout=HANDSHAKE_BOUND * 3)

    busy = asyncio.ensure_future(sync_to_async(hold)())  # thread_sensitive=True: the process's one thread
    try:
        while not started.is_set():
            await asyncio.sleep(0.01)
        outcomes = await asyncio.gather(*(_open(communicator, first) for communicator, first in sockets))
        held_throughout = not busy.done()
    finally:
        release.set()
        await busy
    return list(outcomes), held_throughout


def test_sockets_connect_while_the_one_sync_thread_is_busy():
    members = [MembershipFactory(role="member") for _ in range(SOCKETS)]
    conversations = [Conversation.all_orgs.create(organization=m.organization, user=m.user) for m in members]
    cookies = [_cookie(m.user) for m in members]
    sockets: list[tuple[Any, str | None]] = [
        (_communicator("/ws/notifications/", cookie), "hello") for cookie in cookies
    ]
    sockets += [
        (_communicator(f"/ws/chat/{c.pk}/", cookie), None) for c, cookie in zip(conversations, cookies, strict=True)
    ]
    sockets += [
        (_communicator(f"/ws/ask/{m.organization_id}/", cookie), None)
        for m, cookie in zip(members, cookies, strict=True)
    ]

    outcomes, held = _run(_with_sync_thread_busy(sockets))

    assert held  # the thread was busy for every handshake
    assert outcomes == ["accepted"] * (3 * SOCKETS)


def test_the_access_checks_still_refuse_while_the_sync_thread_is_busy():
    mine, theirs = MembershipFactory(role="member"), MembershipFactory(role="member")
    their_conversation = Conversation.all_orgs.create(organization=theirs.organization, user=theirs.user)
    ended = import_module(settings.SESSION_ENGINE).SessionStore()
    ended.create()
    ended_cookie = f"{settings.SESSION_COOKIE_NAME}={ended.session_key}".encode()
    cookie = _cookie(mine.user)
    no_such_session = f"{settings.SESSION_COOKIE_NAME}=not-a-session".encode()
    sockets = [
        (_communicator(f"/ws/chat/{their_conversation.pk}/", cookie), None),  # another org's conversation
        (_communicator(f"/ws/ask/{theirs.organization_id}/", cookie), None),  # another org
        (_communicator("/ws/notifications/", None), None),  # no session
        (_communicator("/ws/notifications/", no_such_session), None),  # no such session
        (_communicator("/ws/notifications/", ended_cookie), None),  # a session nobody is signed in to
        (_communicator(f"/ws/ask/{mine.organization_id}/", cookie), None),  # theirs: accepted
    ]

    outcomes, held = _run(_with_sync_thread_busy(sockets))

    assert held
    assert outcomes == ["refused 4404", "refused 4404", "refused 4401", "refused 4401", "refused 4401", "accepted"]
