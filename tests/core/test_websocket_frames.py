"""Bad websocket frames (#14): every frame a client can send gets an answer in the one error shape (or, for a
stop, nothing), and the consumer stays usable; an exception inside an answer ends in an error frame, never in
a silent dead task. Property tests throw arbitrary text, binary frames and JSON values at every consumer."""

import concurrent.futures
import json
import uuid

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from agents.models import Conversation, Message
from documents.consumers import FRAMES as ASK_FRAMES
from saas.core.consumers import AccessConsumer, parse_frame
from saas.core.errors import ApplicationError
from tests.accounts.factories import MembershipFactory
from tests.agents.factories import RunFactory
from tests.documents.factories import CollectionFactory
from tests.llm.conftest import fake, models  # noqa: F401

# --- Strategies --------------------------------------------------------------------------------------------

odd_text = st.text(max_size=40) | st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfff", "", " ", "\u202e", "💥" * 9])
scalars = (
    st.none() | st.booleans() | st.integers() | st.integers(min_value=10**30) | st.floats(allow_nan=False) | odd_text
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)  # fmt: skip
fields = st.sampled_from(["type", "content", "question", "model", "collection", "extra", "data"])
typed_objects = st.builds(
    lambda kind, rest: {**rest, "type": kind},
    st.sampled_from(["ask", "stop", "ping", "ASK", "", "delta"]) | st.text(max_size=10) | json_values,
    st.dictionaries(fields, json_values, max_size=4),
)


def _as_frame(value):
    # ensure_ascii: lone surrogates travel as \\udXXX escapes, as a hostile client would send them.
    return json.dumps(value, ensure_ascii=True)


frames = (
    st.text(max_size=200).map(lambda t: ("text", t))
    | st.binary(max_size=64).map(lambda b: ("bytes", b))
    | json_values.map(lambda v: ("text", _as_frame(v)))
    | typed_objects.map(lambda v: ("text", _as_frame(v)))
    | st.sampled_from(["[" * 5000, "1" * 5000, '{"type": "ask", "question": ' + "9" * 5000 + "}", "x" * 70_000]).map(
        lambda t: ("text", t)
    )
)


def _is_stop(frame) -> bool:
    kind, data = frame
    try:
        value = json.loads(data) if kind == "text" else None
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict) and set(value) == {"type"} and value["type"] == "stop"


# --- The parser alone: thousands of frames in a second ------------------------------------------------------


@hypothesis_settings(max_examples=400, deadline=None, database=None)
@given(frames)
def test_parsing_any_frame_returns_a_frame_or_raises_our_error(frame):
    kind, data = frame
    try:
        parsed = parse_frame(data if kind == "text" else None, data if kind == "bytes" else None,
                             schema=ASK_FRAMES, types="ask or stop", max_bytes=16 * 1024)  # fmt: skip
    except ApplicationError as exc:
        assert exc.code in {"unsupported", "too_large", "malformed", "invalid"}
        json.dumps(exc.details)  # the details travel as JSON
        return
    assert parsed.type in {"ask", "stop"}
    if parsed.type == "ask":
        assert isinstance(parsed.question, str) and "\x00" not in parsed.question
        parsed.question.encode()  # no lone surrogates reach a service


def test_an_exception_inside_the_answer_ends_with_an_error_frame():
    consumer = AccessConsumer()
    sent: list[dict] = []

    async def send(text_data=None, bytes_data=None, close=False):
        sent.append(json.loads(text_data))

    consumer.send = send  # type: ignore[method-assign]

    async def boom() -> None:
        raise RuntimeError("a bug in the answer")

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the session's browser may hold this thread's loop
        pool.submit(async_to_sync(consumer._run_work), boom).result()
    assert sent == [{"type": "error", "error": {"code": "internal_error", "message": "Something went wrong; try again.",
                                                "details": {}, "request_id": None}}]  # fmt: skip


# --- Every consumer, live -----------------------------------------------------------------------------------


def _cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def _open(server, path, user):
    return connect(f"ws://{server.host}:{server.port}{path}", additional_headers={"Cookie": _cookie(user)},
                   origin=server.url, open_timeout=10, max_size=None)  # fmt: skip


def _recv(ws) -> dict:
    return json.loads(ws.recv(timeout=20))


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_every_consumer_answers_any_frame_and_stays_usable(daphne_server):
    """A viewer's sockets (asking is refused after the frame is parsed, so each frame gets exactly one answer):
    after any frame, a probe that only a live consumer answers still gets its answer."""
    viewer = MembershipFactory(role="viewer")
    org = viewer.organization
    conversation = Conversation.all_orgs.create(organization=org, user=viewer.user)
    run = RunFactory(organization=org, status="succeeded")
    with (
        _open(daphne_server, "/ws/notifications/", viewer.user) as notifications,
        _open(daphne_server, f"/ws/ask/{org.pk}/", viewer.user) as ask,
        _open(daphne_server, f"/ws/chat/{conversation.pk}/", viewer.user) as chat,
        _open(daphne_server, f"/ws/runs/{run.pk}/", viewer.user) as follow,
    ):
        assert _recv(notifications)["type"] == "hello"
        assert [_recv(follow)["type"] for _ in range(2)] == ["run", "status"]
        sockets = {"notifications": notifications, "ask": ask, "chat": chat, "runs": follow}
        probes = {"notifications": "ping", "ask": "ask", "chat": "ask", "runs": "ping"}
        counter = iter(range(10**6))

        @hypothesis_settings(max_examples=120, deadline=None, database=None,
                             suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
        @given(frame=frames, which=st.sampled_from(sorted(sockets)))
        def check(frame, which):
            ws = sockets[which]
            ws.send(frame[1])
            if not (_is_stop(frame) and which in ("ask", "chat")):
                reply = _recv(ws)
                assert reply["type"] in ("error", "pong"), reply
                if reply["type"] == "error":
                    assert set(reply["error"]) == {"code", "message", "details", "request_id"}
            # The probe: a frame with a unique extra field, refused by name (the runs socket only says read-only).
            marker = f"probe_{next(counter)}"
            ws.send(json.dumps({"type": probes[which], marker: 1}))
            answer = _recv(ws)["error"]
            if which == "runs":
                assert answer["code"] == "read_only"
            else:
                assert answer["code"] == "invalid" and marker in answer["details"]["fields"], answer

        check()
    assert not Message.all_orgs.exists()  # nothing a viewer sent was saved


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
class TestTheAuditsFrames:
    """The frames of the audit, against a member whose asks reach the services."""

    def test_the_ask_socket(self, daphne_server, fake, models):  # noqa: F811
        member = MembershipFactory(role="member")
        theirs = CollectionFactory()  # another org's
        with _open(daphne_server, f"/ws/ask/{member.organization_id}/", member.user) as ws:
            for frame, code in [
                ({"type": "ask", "question": "Refunds?", "collection": "not-a-uuid"}, "collection_not_found"),
                ({"type": "ask", "question": "Refunds?", "collection": str(theirs.pk)}, "collection_not_found"),
                ({"type": "ask", "question": "Refunds?", "collection": str(uuid.uuid4())}, "collection_not_found"),
                ({"type": "ask", "question": "Refunds?", "collection": 5}, "invalid"),
                ({"type": "ask", "question": "Refunds?", "collection": {"id": 1}}, "invalid"),
                ({"type": "ask", "question": ["Refunds?"]}, "invalid"),
                ({"type": "ask", "question": 10**400}, "invalid"),
                ({"type": "ask", "question": "a\x00b"}, "invalid"),
                ({"type": "ask", "question": "\ud800"}, "invalid"),
                ({"type": "ask", "question": "Refunds?", "model": "x"}, "invalid"),
                ({"type": "ask"}, "invalid"),
                ({"question": "Refunds?"}, "unsupported"),
                ({"type": 5}, "unsupported"),
                ("Refunds?", "unsupported"),
                (None, "unsupported"),
            ]:
                ws.send(_as_frame(frame))
                assert _recv(ws)["error"]["code"] == code, frame
            ws.send(b"\x00\xff")
            assert _recv(ws)["error"]["code"] == "unsupported"
            ws.send("[" * 10_000)
            assert _recv(ws)["error"]["code"] == "malformed"
            ws.send(json.dumps({"type": "stop"}))  # a stop without an ask: nothing to stop, nothing said
            ws.send(json.dumps({"type": "ask", "question": " "}))
            assert _recv(ws)["error"]["code"] == "invalid"

    def test_the_chat_socket(self, daphne_server, fake, models):  # noqa: F811
        member = MembershipFactory(role="member")
        conversation = Conversation.all_orgs.create(organization=member.organization, user=member.user)
        with _open(daphne_server, f"/ws/chat/{conversation.pk}/", member.user) as ws:
            for frame in [
                {"type": "ask", "content": "Hi", "model": "test-small\x00"},
                {"type": "ask", "content": "Hi", "model": ["test-small"]},
                {"type": "ask", "content": "Hi", "model": "m" * 65},
                {"type": "ask", "content": {"text": "Hi"}},
                {"type": "ask", "content": "\udfff lone"},
                {"type": "ask", "content": 12},
                {"type": "ask", "content": "Hi", "temperature": 2},
            ]:
                ws.send(_as_frame(frame))
                assert _recv(ws)["error"]["code"] == "invalid", frame
            assert not Message.all_orgs.exists()
            fake.config(token_rate=4)
            ws.send(json.dumps({"type": "ask", "content": "Tell me a story", "model": "test-small"}))
            assert _recv(ws)["type"] == "started"
            ws.send(json.dumps({"type": "ask", "content": "And another", "model": "test-small"}))
            events = [_recv(ws)]
            while events[-1]["type"] != "error":
                events.append(_recv(ws))
            assert events[-1]["error"]["code"] == "busy"
            ws.send(json.dumps({"type": "stop"}))
            while events[-1]["type"] != "done":
                events.append(_recv(ws))
            assert events[-1]["status"] == "cancelled"
            fake.config(token_rate=0)
            ws.send(json.dumps({"type": "ask", "content": "Now in full", "model": "test-small"}))
            events = [_recv(ws)]
            while events[-1]["type"] not in ("done", "error"):
                events.append(_recv(ws))
            assert events[-1]["type"] == "done" and events[-1]["status"] == "complete"
