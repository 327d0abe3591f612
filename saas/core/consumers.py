"""What every websocket consumer shares: one access check, one frame parser, one error shape, one answer task.

Websockets are sessions too. A socket keeps a right only as long as the session and the membership behind it:

- On connect, and again before every frame it handles, `AccessConsumer` checks that the session that opened
  the socket still exists and still signs in the same active user with an unchanged password (Django's session
  hash, exactly as an HTTP request is checked), then asks the consumer's `authorize()` for the rights the socket
  needs, read from the database (a membership, a role's scopes, the object the socket is about).
- Every event that removes a right sends one message through the channel layer (saas/core/events.py) to the
  sockets that may have held it: `access.changed` to a user's or an org's sockets (member removed or left, role
  changed, password changed, account erased, team deleted), which re-run the same check at once, and
  `access.revoked` to one session's sockets (signed out), which close without a check. A socket that lost its
  right stops its answer mid-stream (and with it the upstream model call), sends one error frame and closes.
  A socket that only lost a right for some frames (a role without ASK) stays open: its running answer stops
  with an error frame, and later asks are refused.

Close codes (the browser stops reconnecting on these and says why):

    4401  signed out: the session ended (sign-out, a password change elsewhere, the account deleted or disabled)
    4403  lost access: still a member of the team, but the role no longer allows this channel
    4404  not found: not (or no longer) a member of the team, the team deleted, or the object is gone

Before the handshake is accepted any of them refuses it (the browser sees HTTP 403).

Frames: the client sends text frames, each one JSON object whose "type" picks a small pydantic schema the
consumer declares (`frame_schema`); anything else (binary frames, bad JSON, another JSON value, an unknown
type, wrong or extra fields, NUL bytes or lone surrogates in a string) gets one error frame and the socket stays
usable. Every error is sent in the one error shape (saas.core.errors.error_body):

    {"type": "error", "error": {"code": "...", "message": "...", "details": {...}, "request_id": ...}}
"""

import asyncio
import json
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass
from importlib import import_module
from typing import Annotated, Any, Literal, TypeVar

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels_redis.core import RedisChannelLayer
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.core.exceptions import ValidationError
from django.http.cookie import parse_cookie
from django.utils.crypto import constant_time_compare
from pydantic import AfterValidator, BaseModel, ConfigDict, StrictStr, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from saas.core import threads
from saas.core.errors import ApplicationError, error_body
from saas.core.events import access_session_group, access_user_group
from saas.core.tenancy import org_scope

logger = logging.getLogger(__name__)
T = TypeVar("T")

CLOSE_SIGNED_OUT = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404

_LOST_MESSAGES = {
    CLOSE_SIGNED_OUT: ("signed_out", "You were signed out."),
    CLOSE_FORBIDDEN: ("access_revoked", "Your role no longer allows this."),
    CLOSE_NOT_FOUND: ("access_revoked", "You no longer have access to this."),
}


class AccessLost(Exception):
    """The socket may not stay open: `code` is its close code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


# --- Frames ------------------------------------------------------------------------------------------------


def _clean_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("Text may not contain NUL characters.")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("Text must be valid Unicode (no lone surrogates).") from None
    return value


Text = Annotated[StrictStr, AfterValidator(_clean_text)]


class Frame(BaseModel):
    """A client frame's schema: strict types, no fields beyond those declared."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Stop(Frame):
    type: Literal["stop"]


class Ping(Frame):
    type: Literal["ping"]


def _field_errors(exc: PydanticValidationError, tag: str) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False, include_input=False):
        location = [str(part) for part in error["loc"]]
        if len(location) > 1 and location[0] == tag:
            location = location[1:]  # a tagged union names the tag first ("ask.question"): the field follows
        fields.setdefault(".".join(location) or "frame", []).append(error["msg"])
    return fields


def _unknown_type(exc: PydanticValidationError) -> bool:
    return any(e["type"] == "union_tag_invalid" or tuple(e["loc"]) == ("type",) for e in exc.errors())


def parse_frame(
    text_data: str | None, bytes_data: bytes | None, *, schema: TypeAdapter[Any], types: str, max_bytes: int
) -> Any:
    """The frame as an instance of `schema`, or an ApplicationError whose code and message go to the client."""
    if text_data is None:
        raise ApplicationError("Only JSON text frames are accepted.", code="unsupported")
    if len(text_data) > max_bytes or len(text_data.encode(errors="replace")) > max_bytes:
        raise ApplicationError(f"Messages are limited to {max_bytes} bytes.", code="too_large")
    try:
        content = json.loads(text_data)
    except (ValueError, RecursionError):
        raise ApplicationError("The message is not valid JSON.", code="malformed") from None
    if not isinstance(content, dict) or not isinstance(content.get("type"), str):
        raise ApplicationError(f"Send a JSON object with a type: {types}.", code="unsupported")
    try:
        return schema.validate_python(content)
    except PydanticValidationError as exc:
        if _unknown_type(exc):
            raise ApplicationError(f"Unknown message type; send {types}.", code="unsupported") from None
        details = {"fields": _field_errors(exc, content["type"])}
        raise ApplicationError(
            "The message does not have the expected fields.", code="invalid", details=details
        ) from None


def merge_deltas(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive "delta" events of the same answer as one (their texts joined): tokens that arrived together
    go out in one frame."""
    merged: list[dict[str, Any]] = []
    for event in events:
        last = merged[-1] if merged else None
        if (
            last is not None and event.get("type") == "delta" and last.get("type") == "delta"
            and last.keys() == event.keys() and all(last[k] == event[k] for k in event if k != "text")
        ):  # fmt: skip
            merged[-1] = {**last, "text": last["text"] + event["text"]}
        else:
            merged.append(event)
    return merged


# --- The session behind a socket ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionAuth:
    """Who a session says is signed in, read from the session alone (no query for the user yet): a consumer
    may read the user in the same query as the socket's rights and then `verify` them (`user()` reads them
    alone). The rules are django.contrib.auth.get_user's: a backend still configured, an active user, and the
    session's hash of their password (or a fallback secret's)."""

    user_id: Any
    session_hash: str

    def verify(self, user: Any) -> Any:
        """`user` (the one this session names, read by the caller) if the session still signs them in, else None."""
        if user is None or user.pk != self.user_id or not user.is_active or not self.session_hash:
            return None
        if constant_time_compare(self.session_hash, user.get_session_auth_hash()):
            return user
        if any(constant_time_compare(self.session_hash, h) for h in user.get_session_auth_fallback_hash()):
            return user  # signed with a rotated secret (get_user would also re-sign the session: HTTP does that)
        return None  # their password changed since (get_user flushes such a session; refusing is enough here)

    def user(self) -> Any:
        return self.verify(get_user_model()._default_manager.filter(pk=self.user_id).first())


def session_auth(session_key: str | None) -> SessionAuth | None:
    """The session's signed-in user id and hash, or None (no such session, nobody signed in to it, a backend
    no longer configured). One cache read for a cached_db session; no query."""
    if not session_key:
        return None
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    try:
        user_id = get_user_model()._meta.pk.to_python(store[SESSION_KEY])
        backend = store[BACKEND_SESSION_KEY]
    except (KeyError, ValidationError):
        return None
    if backend not in settings.AUTHENTICATION_BACKENDS:
        return None
    return SessionAuth(user_id, str(store.get(HASH_SESSION_KEY) or ""))


def session_user(session_key: str | None) -> Any:
    """The active user the session still signs in (None if it ended, or their password changed since)."""
    auth = session_auth(session_key)
    return auth.user() if auth is not None else None


class SessionCookieMiddleware:
    """Websockets only: the session key from the request's cookie, as scope["session_key"]. Nothing else, and
    nothing that blocks: no session or user is loaded here. (Channels' AuthMiddlewareStack loaded both through
    sync_to_async on the process's one thread-sensitive thread, so under load every handshake waited in a
    single queue.) AccessConsumer resolves the session and the user behind it in its connect step, in the
    websocket_db pool, together with the socket's rights, and again before every frame."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        header = "; ".join(value.decode("latin-1") for name, value in scope.get("headers", ()) if name == b"cookie")
        key = parse_cookie(header).get(settings.SESSION_COOKIE_NAME) if header else None
        return await self.inner({**scope, "session_key": key or None}, receive, send)


# channels-redis gives each event loop a pool of at most 100 Redis connections and fails a command at once
# ("Too many connections") when all are in use: a burst of sockets connecting or leaving together would lose
# some handshakes that way. Group operations wait for one of these slots instead.
CHANNEL_LAYER_OPS = 48
_layer_slots: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = weakref.WeakKeyDictionary()


async def _layer_op(operation: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    loop = asyncio.get_running_loop()
    slots = _layer_slots.get(loop)
    if slots is None:
        slots = _layer_slots[loop] = asyncio.Semaphore(CHANNEL_LAYER_OPS)
    async with slots:
        return await operation(*args)


async def groups_change(layer: Any, channel: str, *, add: Collection[str] = (), discard: Collection[str] = ()) -> None:
    """Join and leave channel-layer groups. On channels-redis, all of a socket's group changes go in one
    pipelined round trip per shard (what its group_add does per group: ZADD with the time, EXPIRE; group_discard:
    ZREM), instead of two round trips per group joined: a handshake joins three groups (its user's, its
    session's, its team's). Other layers (the in-memory one) get their own group_add and group_discard."""
    if not add and not discard:
        return
    if not isinstance(layer, RedisChannelLayer):
        await asyncio.gather(*(_layer_op(layer.group_add, g, channel) for g in add),
                             *(_layer_op(layer.group_discard, g, channel) for g in discard))  # fmt: skip
        return
    assert layer.require_valid_channel_name(channel), "Channel name not valid"
    shards: dict[int, list[tuple[str, str]]] = {}
    for op, groups in (("add", add), ("discard", discard)):
        for group in groups:
            assert layer.require_valid_group_name(group), "Group name not valid"
            shards.setdefault(layer.consistent_hash(group), []).append((op, layer._group_key(group)))

    async def shard(index: int, changes: list[tuple[str, str]]) -> None:
        pipe = layer.connection(index).pipeline(transaction=False)
        now = time.time()
        for op, key in changes:
            if op == "add":
                pipe.zadd(key, {channel: now})
                pipe.expire(key, layer.group_expiry)
            else:
                pipe.zrem(key, channel)
        await pipe.execute()

    await asyncio.gather(*(_layer_op(shard, index, changes) for index, changes in shards.items()))


# Work running outside a closed consumer (an answer draining after its socket closed) is kept referenced here
# until it ends, so the event loop does not drop it half-way.
_draining: set[asyncio.Task[None]] = set()


class AccessConsumer(AsyncWebsocketConsumer):
    """The base of every consumer. Subclasses declare:

    - `authorize(user)` (synchronous, in a worker thread): the socket's rights, or AccessLost (or
      `authorize_session(auth)`, which reads the session's user together with the rights);
    - `access_groups(access)`: the channel-layer groups the socket belongs to while it holds them;
    - `frame_schema` and `frame_types`: the frames the client may send (None: the socket only sends);
    - `handle(frame)`: what a valid frame does; `opened()` and `access_updated(access)` where needed.
    """

    frame_schema: TypeAdapter[Any] | None = None
    frame_types = "nothing: this channel only sends"
    max_frame_bytes = 16 * 1024

    user: Any = None
    access: Any = None
    session_key: str | None = None
    task: asyncio.Task[None] | None = None
    closed = False

    # --- Hooks --------------------------------------------------------------------------------------------

    def authorize(self, user: Any) -> Any:
        raise NotImplementedError

    def authorize_session(self, auth: SessionAuth) -> tuple[Any, Any]:
        """The session's user and the socket's rights, or AccessLost. By default the user is read, then
        `authorize(user)` asked; a consumer whose rights come from one query may read the user in it too (and
        must then `auth.verify` them): one query per check instead of two or three."""
        user = auth.user()
        if user is None:
            raise AccessLost(CLOSE_SIGNED_OUT)
        return user, self.authorize(user)

    def access_groups(self, access: Any) -> list[str]:
        return []

    async def opened(self) -> None:
        """After the handshake was accepted."""

    async def handle(self, frame: Any) -> None:
        raise NotImplementedError

    async def access_updated(self, access: Any) -> None:
        """After a re-check that kept the socket open (its rights may have narrowed)."""

    # --- Lifecycle ----------------------------------------------------------------------------------------

    async def connect(self) -> None:
        self.joined: set[str] = set()
        self.stop_flag = threading.Event()
        self.session_key = self.scope.get("session_key")
        if not self.session_key:
            await self.close(code=CLOSE_SIGNED_OUT)  # before accept: the handshake is refused with HTTP 403
            return
        try:  # the session, the user behind it and the socket's rights: one step in the websocket_db pool
            self.access = await threads.db_step(self._check)
        except AccessLost as lost:
            self.closed = True
            await self.close(code=lost.code)
            return
        await self._join(self.access)
        await self.accept()
        await self.opened()

    async def disconnect(self, code: int) -> None:
        self.closed = True
        await self._leave(set(getattr(self, "joined", ())))
        await self.stop_work()

    def _check(self) -> Any:
        """In a websocket_db step (which gives its connection back when it ends)."""
        auth = session_auth(self.session_key)
        if auth is None or (self.user is not None and auth.user_id != self.user.pk):
            raise AccessLost(CLOSE_SIGNED_OUT)
        user, access = self.authorize_session(auth)
        self.user = user
        return access

    async def recheck(self) -> bool:
        """Re-run the connect check; a socket that lost its right is closed (False)."""
        try:
            access = await threads.db_step(self._check)
        except AccessLost as lost:
            await self.revoke(lost.code)
            return False
        self.access = access
        await self._join(access)
        await self.access_updated(access)
        return True

    async def checked_step(self, function: Callable[..., T], *args: Any) -> T:
        """The access check and `function(access, *args)` in one websocket_db step: one hop and one pooled
        connection for a frame whose work starts on the database (`checks_in_step`). `self.access` is the
        access just checked when it returns. A lost right raises AccessLost, which closes the socket as
        `recheck` does (start_work's task handles it)."""

        def step() -> tuple[Any, T]:
            access = self._check()
            return access, function(access, *args)

        access, result = await threads.db_step(step)
        self.access = access
        await self._join(access)
        return result

    async def revoke(self, code: int) -> None:
        if self.closed:
            return
        self.closed = True  # nothing more reaches the client: the answer still draining is not theirs any more
        await self.stop_work()
        error_code, message = _LOST_MESSAGES[code]
        await self._send({"type": "error", **error_body(error_code, message)})
        await self.close(code=code)

    async def _join(self, access: Any) -> None:
        wanted = {access_user_group(self.user.pk), access_session_group(self.session_key or ""),
                  *self.access_groups(access)}  # fmt: skip
        adding, leaving = wanted - self.joined, self.joined - wanted
        await groups_change(self.channel_layer, self.channel_name, add=adding, discard=leaving)
        self.joined = (self.joined - leaving) | adding

    async def _leave(self, groups: set[str]) -> None:
        groups = set(groups)
        await groups_change(self.channel_layer, self.channel_name, discard=groups)
        self.joined -= groups

    # --- Channels' dispatch, without its hop to the process's one sync thread ------------------------------

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels' own dispatch first runs close_old_connections through sync_to_async on the process's single
        # "thread-sensitive" thread, for every message of every socket (connect, each frame, each channel-layer
        # event, disconnect). Under load every handshake queued there behind all the other sockets' messages,
        # and daphne closed it at its connect timeout. Our consumers never touch the database on the event loop:
        # their steps run in our pools, which give their connections back when each step ends (threads.py).
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        await self.disconnect(message["code"])  # as channels', without its close_old_connections hop
        raise StopConsumer()

    # --- Channel-layer messages (saas/core/events.py) ------------------------------------------------------

    async def access_changed(self, message: dict[str, Any]) -> None:
        if not self.closed:
            await self.recheck()

    async def access_revoked(self, message: dict[str, Any]) -> None:
        await self.revoke(int(message["code"]))

    # --- Frames -------------------------------------------------------------------------------------------

    def checks_in_step(self, frame: Any) -> bool:
        """Whether handling `frame` starts with `checked_step`, which re-checks the access in the same hop as
        the frame's first database work (so `receive` does not check it first in a hop of its own)."""
        return False

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        try:
            if self.closed:
                return
            try:
                if self.frame_schema is None:
                    raise ApplicationError("This channel only sends.", code="read_only")
                frame = parse_frame(text_data, bytes_data, schema=self.frame_schema, types=self.frame_types,
                                    max_bytes=self.max_frame_bytes)  # fmt: skip
            except ApplicationError:
                if await self.recheck():  # the access first: a socket that lost it is closed, not answered
                    raise
                return
            if not self.checks_in_step(frame) and not await self.recheck():
                return
            await self.handle(frame)
        except ApplicationError as exc:
            await self.send_error(exc)
        except Exception:  # a bug or an outage (the access check cannot run): this frame fails, the socket stays
            logger.exception("websocket frame failed")
            await self.send_error(ApplicationError("Something went wrong; try again.", code="internal_error"))

    async def send_event(self, event: dict[str, Any]) -> None:
        if not self.closed:
            await self._send(event)

    async def _send(self, event: dict[str, Any]) -> None:
        try:
            await self.send(text_data=json.dumps(event))
        except Exception:  # the client went away meanwhile: its disconnect stops the work
            logger.debug("websocket send failed", exc_info=True)

    async def send_error(self, exc: ApplicationError) -> None:
        await self.send_event({"type": "error", **error_body(exc.code, exc.message, exc.details)})

    # --- The one piece of work a socket runs at a time (an answer, a run being followed) --------------------

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    def start_work(self, work: Callable[[], Awaitable[None]]) -> None:
        if self.busy:
            raise ApplicationError("Wait for the current answer, or stop it first.", code="busy")
        self.stop_flag.clear()
        self.task = asyncio.create_task(self._run_work(work))
        _draining.add(self.task)
        self.task.add_done_callback(_draining.discard)

    async def _run_work(self, work: Callable[[], Awaitable[None]]) -> None:
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except AccessLost as lost:  # checked_step found the right gone
            await self.revoke(lost.code)
        except ApplicationError as exc:
            await self.send_error(exc)
        except Exception:  # never a silent dead task: the client hears that it failed
            logger.exception("websocket work failed")
            await self.send_error(ApplicationError("Something went wrong; try again.", code="internal_error"))

    async def stop_work(self) -> None:
        """Ask the running work to stop (it closes its upstream call and records what it has)."""
        if getattr(self, "stop_flag", None) is not None:
            self.stop_flag.set()

    async def in_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        """A short blocking step (the database) in the websocket database pool, its connections closed after."""
        return await threads.db_step(function, *args)

    async def relay(self, events: Iterator[dict[str, Any]], org: Any) -> None:
        """Send an answer's events as they come. The (synchronous) answer runs in one thread of the stream pool
        in the org's scope, start to end (saas/core/threads.stream_to); tokens that arrived together go out in
        one frame. Frames (a stop, a revoked right) are handled meanwhile; the answer checks the stop flag
        between tokens, and closing it (in its thread) closes the upstream call."""

        async def deliver(batch: list[dict[str, Any]]) -> None:
            for event in merge_deltas(batch):
                await self.send_event(event)

        # The answer is over for the client at its last event: the socket may ask again at once, while the
        # answer's thread finishes what follows it (closing the iterator) on its own.
        await threads.stream_to(events, deliver, enter=lambda: org_scope(org), last=_is_last)


def _is_last(event: dict[str, Any]) -> bool:
    return event.get("type") in ("done", "stopped", "error")
