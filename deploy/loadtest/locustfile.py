"""Crewdesk under a realistic mix of users (Locust; `make loadtest` runs it headless, deploy/loadtest/run.py).

- BrowserUser (half the users): opens the overview, documents, ask and chat pages, asks questions over the ask
  websocket (/ws/ask/<org>/) and chats over the chat websocket (/ws/chat/<conversation>/), reading every streamed
  event to the end, with a person's pauses between actions.
- ApiClient (a fifth): a team's integration with an API key: uploads documents and waits for them to be ready,
  searches and asks over /api/v1, and now and then runs a crew and waits for its result.
- OpenAIClient (the rest): an application on the OpenAI surface: /v1/chat/completions (plain and streamed),
  /v1/embeddings and /v1/models.

The data comes from fixture.py (LOADTEST_FIXTURE: the JSON file run.py wrote). Websocket round trips are reported
to Locust as requests of type WS, with the time to the first streamed event as its own row ("... first token").
"""

import itertools
import json
import os
import random
import time
import uuid
from typing import Any

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
    wait_time = between(3, 12)

    def on_start(self) -> None:
        self.team, member = next(_members)
        self.cookie = member["cookie"]
        self.conversation = member["conversation"]
        self.client.headers["Cookie"] = self.cookie
        self.ws_base = (self.host or FIXTURE["url"]).replace("http://", "ws://").replace("https://", "wss://")

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

    def _stream(self, path: str, frame: dict[str, Any], name: str, ends: set[str]) -> None:
        started = time.perf_counter()
        try:
            ws = websocket.create_connection(
                self.ws_base + path, header=[f"Cookie: {self.cookie}"], origin=self.host, timeout=60
            )
        except Exception as error:
            _fire(name, started, exception=error)
            return
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
            _fire(name, started, size)
        except Exception as error:
            _fire(name, started, size, exception=error)
        finally:
            ws.close()

    @task(3)
    def ask(self) -> None:
        self._page(f"/o/{self.team['slug']}/ask/", "page: ask")
        self._stream(f"/ws/ask/{self.team['org_id']}/", {"type": "ask", "question": _question(self.team)},
                     "WS /ws/ask/ (answer)", {"done", "stopped"})  # fmt: skip

    @task(3)
    def chat(self) -> None:
        self._page(f"/o/{self.team['slug']}/chat/{self.conversation}/", "page: chat")
        self._stream(f"/ws/chat/{self.conversation}/", {"type": "ask", "content": _question(self.team)},
                     "WS /ws/chat/ (answer)", {"done"})  # fmt: skip


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
