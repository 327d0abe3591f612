"""Crewdesk under a realistic mix of users (Locust; `make loadtest` runs it headless, deploy/loadtest/run.py).

- BrowserUser (half the users): a person in the workspace. Their tab keeps the notifications socket
  (/ws/notifications/) open for the whole visit, as every page does; they open the overview, documents and crews
  pages (5-15 s between clicks), and on the ask and chat pages keep that page's socket open while they ask one to
  three questions, reading each answer for 10-30 s before the next. Every streamed event is read to the end.
- ApiClient (a fifth): a team's integration with an API key: uploads documents and waits for them to be ready,
  searches and asks over /api/v1, and now and then runs a crew and waits for its result (2-8 s between calls).
- OpenAIClient (the rest): an application on the OpenAI surface: /v1/chat/completions (plain and streamed),
  /v1/embeddings and /v1/models (1-5 s between calls).

The data comes from fixture.py (LOADTEST_FIXTURE: the JSON file run.py wrote). Websocket round trips are reported
to Locust as requests of type WS: the handshake of each socket, each answer from question to its last event and
its first token as rows of their own; a notifications socket that drops is an error.
"""

import itertools
import json
import os
import random
import time
import uuid
from typing import Any

import gevent
import websocket  # websocket-client (a Locust dependency): plain sockets, which gevent makes cooperative
from locust import HttpUser, between, events, task

FIXTURE: dict[str, Any] = json.loads(open(os.environ["LOADTEST_FIXTURE"]).read())  # noqa: SIM115
TEAMS = FIXTURE["teams"]
_members = itertools.cycle([(team, member) for member_index in range(len(TEAMS[0]["members"]))
                            for team in TEAMS for member in [team["members"][member_index]]])  # fmt: skip
_teams = itertools.cycle(TEAMS)
RUN_TIMEOUT = float(os.environ.get("LOADTEST_RUN_TIMEOUT", "120"))
QUESTIONS = [
    "Who runs the {topic} programme?",
    "How do I request access to the {topic} programme?",
    "What is the budget of the {topic} programme?",
    "When did the {topic} programme start?",
]


def _question(team: dict[str, Any]) -> str:
    return random.choice(QUESTIONS).format(topic=random.choice(team["topics"]))  # noqa: S311


def _fire(name: str, started: float, length: int = 0, exception: Exception | None = None) -> None:
    events.request.fire(
        request_type="WS", name=name, response_time=(time.perf_counter() - started) * 1000,
        response_length=length, exception=exception, context={},
    )  # fmt: skip


class BrowserUser(HttpUser):
    weight = 5
    wait_time = between(5, 15)  # between clicks
    reading = (10.0, 30.0)  # reading an answer before the next question

    def on_start(self) -> None:
        self.team, member = next(_members)
        self.cookie = member["cookie"]
        self.conversation = member["conversation"]
        self.client.headers["Cookie"] = self.cookie
        self.ws_base = (self.host or FIXTURE["url"]).replace("http://", "ws://").replace("https://", "wss://")
        self.notifications: Any = None
        self.stopping = False
        self.listener = gevent.spawn(self._listen)  # the tab's notifications socket, open for the whole visit

    def on_stop(self) -> None:
        self.stopping = True
        self.listener.kill(block=True, timeout=5)
        if self.notifications is not None:
            self.notifications.close()

    def _connect(self, path: str, name: str) -> Any:
        """The socket, its handshake reported as "<name> (handshake)"; None if it failed (reported)."""
        started = time.perf_counter()
        try:
            ws = websocket.create_connection(
                self.ws_base + path, header=[f"Cookie: {self.cookie}"], origin=self.host, timeout=60
            )
        except Exception as error:
            _fire(f"{name} (handshake)", started, exception=error)
            return None
        _fire(f"{name} (handshake)", started)
        return ws

    def _listen(self) -> None:
        while not self.stopping:
            self.notifications = self._connect("/ws/notifications/", "WS /ws/notifications/")
            if self.notifications is None:
                gevent.sleep(random.uniform(1, 5))  # noqa: S311  # as socket.js: wait, then reconnect
                continue
            started = time.perf_counter()
            self.notifications.settimeout(None)  # a quiet team sends nothing for minutes
            try:
                while True:
                    self.notifications.recv()  # hello, then whatever the team's work pushes
            except Exception as error:  # not the GreenletExit of on_stop (a BaseException)
                if self.stopping:
                    return
                _fire("WS /ws/notifications/ (dropped)", started, exception=error)

    def _page(self, path: str, name: str) -> None:
        with self.client.get(path, name=name, catch_response=True, allow_redirects=False) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}")

    @task(3)
    def overview(self) -> None:
        self._page(f"/o/{self.team['slug']}/", "page: overview")

    @task(2)
    def documents(self) -> None:
        self._page(f"/o/{self.team['slug']}/documents/", "page: documents")

    @task(1)
    def crews(self) -> None:
        self._page(f"/o/{self.team['slug']}/crews/", "page: crews")

    def _answer(self, ws: Any, frame: dict[str, Any], name: str, ends: set[str]) -> bool:
        """One question on an open socket, read to its last event; False when the socket is no longer usable."""
        started = time.perf_counter()
        size, first = 0, None
        try:
            ws.send(json.dumps(frame))
            while True:
                message = ws.recv()
                size += len(message)
                event = json.loads(message)
                kind = event.get("type")
                if kind == "delta" and first is None:
                    first = time.perf_counter()
                    _fire(f"{name} first token", started)
                if kind == "error":
                    raise RuntimeError(f"error event: {event.get('error') or event}")
                if kind in ends:
                    break
        except Exception as error:
            _fire(name, started, size, exception=error)
            return False
        _fire(name, started, size)
        return True

    def _read_for(self, ws: Any, seconds: float, name: str) -> bool:
        """The person reads the answer for `seconds` while the tab keeps reading its socket, as a browser does:
        daphne pings an open socket every 20 s and drops one whose pong has not come within 30 s, and
        websocket-client answers a ping only inside recv(). False (reported) if the socket dropped meanwhile."""
        started = time.perf_counter()
        deadline = time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                ws.settimeout(left)
                try:
                    ws.recv()  # nothing is expected between answers; a ping is answered inside
                except websocket.WebSocketTimeoutException:
                    break
        except Exception as error:
            _fire(f"{name} (dropped while reading)", started, exception=error)
            return False
        finally:
            ws.settimeout(60)
        return True

    def _conversation(self, page: tuple[str, str], path: str, name: str, frame: Any, ends: set[str]) -> None:
        """A page with its socket open while the person asks one to three questions, reading each answer."""
        self._page(page[0], page[1])
        ws = self._connect(path, name.split(" (")[0])
        if ws is None:
            return
        try:
            for turn in range(random.randint(1, 3)):  # noqa: S311
                if turn and not self._read_for(ws, random.uniform(*self.reading), name):  # noqa: S311
                    return
                if not self._answer(ws, frame(), name, ends):
                    return
        finally:
            ws.close()

    @task(3)
    def ask(self) -> None:
        self._conversation(
            (f"/o/{self.team['slug']}/ask/", "page: ask"), f"/ws/ask/{self.team['org_id']}/", "WS /ws/ask/ (answer)",
            lambda: {"type": "ask", "question": _question(self.team)}, {"done", "stopped"},
        )  # fmt: skip

    @task(3)
    def chat(self) -> None:
        self._conversation(
            (f"/o/{self.team['slug']}/chat/{self.conversation}/", "page: chat"), f"/ws/chat/{self.conversation}/",
            "WS /ws/chat/ (answer)", lambda: {"type": "ask", "content": _question(self.team)}, {"done"},
        )  # fmt: skip


class ApiClient(HttpUser):
    weight = 2
    wait_time = between(2, 8)

    def on_start(self) -> None:
        self.team = next(_teams)
        self.client.headers["Authorization"] = f"Bearer {self.team['key']}"

    @task(1)
    def upload(self) -> None:
        topic = random.choice(self.team["topics"])  # noqa: S311
        body = f"# Note {uuid.uuid4()}\n\nThe {topic} programme meets on Tuesdays. Minutes go to the wiki.\n"
        upload = {"file": (f"note-{uuid.uuid4().hex[:8]}.md", body.encode(), "text/markdown")}
        with self.client.post(
            "/api/v1/documents", files=upload, name="POST /api/v1/documents", catch_response=True
        ) as response:
            if response.status_code != 202:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return
            document = response.json()["id"]
        started = time.perf_counter()
        while time.perf_counter() - started < RUN_TIMEOUT:
            time.sleep(1)
            status = self.client.get(f"/api/v1/documents/{document}", name="GET /api/v1/documents/{id}").json()
            if status.get("status") in ("ready", "failed"):
                failed = RuntimeError(status.get("failure_reason")) if status["status"] == "failed" else None
                _fire_api("document ingested (upload to ready)", started, failed)
                return
        _fire_api("document ingested (upload to ready)", started, TimeoutError(f"not ready in {RUN_TIMEOUT:.0f} s"))

    @task(4)
    def search(self) -> None:
        self.client.post("/api/v1/search", json={"query": _question(self.team)}, name="POST /api/v1/search")

    @task(4)
    def ask(self) -> None:
        self.client.post("/api/v1/ask", json={"question": _question(self.team)}, name="POST /api/v1/ask")

    @task(2)
    def documents(self) -> None:
        self.client.get("/api/v1/documents", name="GET /api/v1/documents")

    @task(1)
    def crew_run(self) -> None:
        topic = random.choice(self.team["topics"])  # noqa: S311
        with self.client.post(f"/api/v1/crews/{self.team['crew']}/runs", json={"inputs": {"topic": topic}},
                              name="POST /api/v1/crews/{id}/runs", catch_response=True) as response:  # fmt: skip
            if response.status_code != 202:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return
            run = response.json()["id"]
        started = time.perf_counter()
        while time.perf_counter() - started < RUN_TIMEOUT:
            time.sleep(2)
            status = self.client.get(f"/api/v1/runs/{run}", name="GET /api/v1/runs/{id}").json()
            if status.get("status") in ("succeeded", "failed", "cancelled"):
                failed = None if status["status"] == "succeeded" else RuntimeError(str(status.get("error")))
                _fire_api("crew run (start to result)", started, failed)
                return
        _fire_api("crew run (start to result)", started, TimeoutError(f"not finished in {RUN_TIMEOUT:.0f} s"))


def _fire_api(name: str, started: float, exception: Exception | None) -> None:
    events.request.fire(request_type="JOB", name=name, response_time=(time.perf_counter() - started) * 1000,
                        response_length=0, exception=exception, context={})  # fmt: skip


class OpenAIClient(HttpUser):
    weight = 3
    wait_time = between(1, 5)

    def on_start(self) -> None:
        self.team = next(_teams)
        self.client.headers["Authorization"] = f"Bearer {self.team['key']}"

    def _messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": "You answer in one paragraph."},
                {"role": "user", "content": _question(self.team)}]  # fmt: skip

    @task(4)
    def chat(self) -> None:
        self.client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": self._messages()},
                         name="POST /v1/chat/completions")  # fmt: skip

    @task(3)
    def chat_stream(self) -> None:
        body = {"model": "gpt-4o-mini", "messages": self._messages(), "stream": True}
        started = time.perf_counter()
        with self.client.post("/v1/chat/completions", json=body, name="POST /v1/chat/completions (stream)",
                              stream=True, catch_response=True) as response:  # fmt: skip
            first = True
            done = False
            for line in response.iter_lines():
                if first and line.startswith(b"data: "):
                    first = False
                    _fire_api_http("POST /v1/chat/completions (stream) first token", started)
                if line.strip() == b"data: [DONE]":
                    done = True
            if response.status_code != 200 or not done:
                response.failure(f"{response.status_code}, stream ended without [DONE]")

    @task(2)
    def embeddings(self) -> None:
        self.client.post("/v1/embeddings", json={"model": "local-minilm", "input": [_question(self.team)]},
                         name="POST /v1/embeddings")  # fmt: skip

    @task(1)
    def models(self) -> None:
        self.client.get("/v1/models", name="GET /v1/models")


def _fire_api_http(name: str, started: float) -> None:
    events.request.fire(request_type="POST", name=name, response_time=(time.perf_counter() - started) * 1000,
                        response_length=0, exception=None, context={})  # fmt: skip
