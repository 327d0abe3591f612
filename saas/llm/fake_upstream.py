"""A fake OpenAI-compatible upstream on loopback, for tests, benchmarks and offline development.

It speaks the real protocol over a real socket (`POST /v1/chat/completions` with and without SSE streaming,
`POST /v1/embeddings`, `POST /v1/moderations`, `GET /v1/models`), so the gateway's real OpenAI provider talks
to it unchanged. Its moderation flags any input that contains a word of MODERATION_WORDS, under that category.

Faults are scripted per upstream model name: `POST /_script {"model": "m", "steps": [...]}` queues one
behaviour per request for that model; when the queue is empty, requests succeed. A step is a dict:

    {"status": 429, "retry_after": 1}       an HTTP error (with Retry-After when given)
    {"status": 500} / {"status": 400, "code": "context_length_exceeded"} / {"code": "content_filter"}
    {"delay": 2.0}                          sleep before answering (a timeout, seen from a short client)
    {"malformed": true}                     a stream chunk that is not JSON
    {"disconnect_after": 2}                 close the stream after N content chunks, without [DONE]
    {"hold_after": 1}                       pause the stream after N content chunks until `POST /_release`
                                            (at most 30 s): lets a test look at a stream in mid-flight
    {"end_after": 0.2}                      end a stream's body this long after its [DONE] (kept alive)
    {"reply": "text"}                       answer this text
    {"tool_calls": [{"name": "calculator", "arguments": {"expression": "2+2"}}]}
                                            call tools (function calling; `arguments` may be a raw string)

Unscripted, it answers like OpenAI: offered `tools` with `tool_choice` "required" or a named function, it calls
that function (the first tool for "required"), and with "auto" it calls a tool whose name the last user
message mentions; the arguments fill the function's parameters with placeholders (saas/llm/schema_fill.py).
Asked for `response_format` json_object it answers `{"answer": <text>}`, for json_schema placeholders that
validate against the schema. A scripted `reply` is sent verbatim whatever was asked (that is how a test gets
invalid JSON). `stop` cuts the answer before a stop sequence; `logprobs` / `top_logprobs` come back per token.

Knobs for every request: `latency` (seconds before the first byte) and `token_rate` (tokens per second
when streaming), set with `POST /_config`. `GET /_requests` lists the last requests received (for assertions):
at most `max_requests` of them (FAKE_UPSTREAM_MAX_REQUESTS, default 1,000), so that a benchmark sending millions
of requests keeps a bounded memory; `GET /_stats` counts every request received since the last `POST /_reset`.

    python -m saas.llm.fake_upstream --port 9100 [--max-requests 1000]
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
import uuid
from typing import Any

from saas.llm import schema_fill
from saas.llm.fakes import DEFAULT_MAX_REQUESTS, DEFAULT_REPLY, FakeHandler, FakeServer, FakeState, words

MODERATION_WORDS = {"fakeviolence": "violence", "fakeharassment": "harassment"}


class FakeUpstreamState(FakeState):
    def __init__(self, max_requests: int | None = None) -> None:
        super().__init__(max_requests)
        self.latency = 0.0
        self.token_rate = 0.0  # 0: as fast as possible
        self.reply = DEFAULT_REPLY
        self.release = threading.Event()

    def reset(self) -> None:
        self.release = threading.Event()
        super().reset()
        with self.lock:
            self.latency, self.token_rate, self.reply = 0.0, 0.0, DEFAULT_REPLY


def _reply_text(state: FakeUpstreamState, body: dict[str, Any]) -> str:
    last = next((m for m in reversed(body.get("messages") or []) if m.get("role") == "user"), None)
    content = last.get("content") if last else ""
    if isinstance(content, str) and content.startswith("echo:"):
        return content[len("echo:") :].strip()
    return state.reply


def _unscripted_calls(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool call OpenAI's `tool_choice` asks for (or, with "auto", the tool the user mentions)."""
    tools = [t["function"] for t in body.get("tools") or [] if t.get("type") == "function"]
    choice = body.get("tool_choice") or "auto"
    if not tools or choice == "none":
        return []
    if isinstance(choice, dict):
        chosen = next((t for t in tools if t["name"] == (choice.get("function") or {}).get("name")), None)
    elif choice == "required":
        chosen = tools[0]
    else:
        last: dict[str, Any] = next(
            (m for m in reversed(body.get("messages") or []) if m.get("role") in ("user", "tool")), {}
        )
        said = str(last.get("content") or "") if last.get("role") == "user" else ""
        chosen = next((t for t in tools if t["name"] in said), None)
    if chosen is None:
        return []
    parameters = chosen.get("parameters") or {"type": "object", "properties": {}}
    return [{"name": chosen["name"], "arguments": schema_fill.fill(parameters, schema_fill.Placeholders())}]


def _formatted(body: dict[str, Any], text: str) -> str:
    """The answer in the `response_format` asked for, cut before the first `stop` sequence."""
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_object":
        text = json.dumps({"answer": text})
    elif response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
        text = json.dumps(schema_fill.fill(schema, schema_fill.Placeholders()))
    stop = body.get("stop")
    cuts = [text.find(s) for s in ([stop] if isinstance(stop, str) else stop or []) if s and s in text]
    return text[: min(cuts)] if cuts else text


def _logprobs(body: dict[str, Any], pieces: list[str]) -> dict[str, Any] | None:
    if not body.get("logprobs"):
        return None
    top = int(body.get("top_logprobs") or 0)
    return {
        "content": [
            {"token": p, "logprob": -0.01 * (i + 1), "bytes": list(p.encode()),
             "top_logprobs": [{"token": p, "logprob": -0.01 * (i + 1), "bytes": list(p.encode())}][:top]}
            for i, p in enumerate(pieces)
        ],
        "refusal": None,
    }  # fmt: skip


def _count(messages: list[dict[str, Any]]) -> int:
    return sum(max(1, len(str(m.get("content", "")).split())) + 3 for m in messages)


class Handler(FakeHandler):
    server: FakeUpstreamServer

    def _error(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        kind = "rate_limit_error" if status == 429 else ("server_error" if status >= 500 else "invalid_request_error")
        self.send_json(status, {"error": {"message": message, "type": kind, "param": None, "code": code}}, headers)

    def control(self, method: str, path: str, body: dict[str, Any]) -> bool:
        state = self.server.state
        if method == "POST" and path == "/_config":
            with state.lock:
                for key in ("latency", "token_rate", "reply"):
                    if key in body:
                        setattr(state, key, body[key])
        elif method == "POST" and path == "/_release":
            state.release.set()
        else:
            return False
        self.send_json(200, {"ok": True})
        return True

    def received(self, method: str, body: dict[str, Any]) -> dict[str, Any] | None:
        if method != "POST":
            return None  # model listings (connection tests, health) are not the calls tests look at
        if azure := re.match(r"/openai/deployments/([^/]+)/(chat/completions|embeddings)", self.path):
            body["model"], self.path = azure[1], f"/v1/{azure[2]}"  # Azure OpenAI: the deployment is the model
        auth = self.headers.get("Authorization") or self.headers.get("api-key")
        return {"path": self.path, "body": body, "auth": auth}

    def route(self, method: str, path: str, body: dict[str, Any]) -> None:
        if method == "GET" and path == "/v1/models":
            models = [{"id": "fake-small", "object": "model", "owned_by": "fake"}]
            self.send_json(200, {"object": "list", "data": models})
        elif method == "POST" and path == "/v1/chat/completions":
            self._chat(body)
        elif method == "POST" and path == "/v1/embeddings":
            self._embeddings(body)
        elif method == "POST" and path == "/v1/moderations":
            self._moderations(body)
        else:
            self._error(404, "not found")

    def _chat(self, body: dict[str, Any]) -> None:
        state = self.server.state
        model = body.get("model", "")
        step = state.next_step(model)
        time.sleep(step.get("delay", 0) + state.latency)
        if "status" in step:
            headers = {"Retry-After": str(step["retry_after"])} if "retry_after" in step else None
            return self._error(
                step["status"], step.get("message", f"scripted {step['status']}"), step.get("code"), headers
            )
        if step.get("code") == "content_filter":
            return self._error(400, "The response was filtered.", "content_filter")
        if "tools" in body and body.get("tool_choice") not in (None, "none", "auto") and not body.get("tools"):
            return self._error(400, "tool_choice is only allowed when tools are specified.")
        text = step["reply"] if "reply" in step else _formatted(body, _reply_text(state, body))
        wanted = step.get("tool_calls") or ([] if "reply" in step else _unscripted_calls(body))
        calls: list[dict[str, Any]] = [
            {"id": f"call_fake{i}{time.monotonic_ns()}", "type": "function",
             "function": {"name": c["name"], "arguments": c["arguments"] if isinstance(c["arguments"], str)
                          else json.dumps(c["arguments"])}}
            for i, c in enumerate(wanted)
        ]  # fmt: skip
        if calls:
            text = ""
        prompt_tokens, pieces = _count(body.get("messages") or []), (words(text) if text else [])
        completion_tokens = sum(len(c["function"]["arguments"].split()) + 2 for c in calls) + len(pieces)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        created, ident = int(time.time()), f"chatcmpl-fake{time.monotonic_ns()}"
        if not body.get("stream"):
            return self.send_json(
                200,
                {
                    "id": ident, "object": "chat.completion", "created": created, "model": model,
                    "choices": [
                        {"index": 0, "finish_reason": "tool_calls" if calls else "stop", "message": {
                            "role": "assistant", "content": text or None, **({"tool_calls": calls} if calls else {})},
                         "logprobs": _logprobs(body, pieces)}
                    ],
                    "system_fingerprint": "fp_fake" if "seed" in body else None,
                    "usage": usage,
                },
            )  # fmt: skip
        self.start_sse(chunked=True)

        def chunk(delta: dict[str, Any], finish: str | None = None, with_usage: bool = False) -> bytes:
            payload: dict[str, Any] = {
                "id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if not with_usage else [],
            }  # fmt: skip
            if with_usage:
                payload["usage"] = usage
            return f"data: {json.dumps(payload)}\n\n".encode()

        try:
            self.wfile.write(chunk({"role": "assistant", "content": ""}))
            for i, piece in enumerate(pieces):
                if step.get("malformed") and i == 1:
                    self.wfile.write(b"data: {this is not json\n\n")
                    self.wfile.flush()
                    return
                if "disconnect_after" in step and i == step["disconnect_after"]:
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if "hold_after" in step and i == step["hold_after"]:
                    state.release.wait(timeout=30)
                if state.token_rate:
                    time.sleep(1.0 / state.token_rate)
                self.wfile.write(chunk({"content": piece}))
                self.wfile.flush()
            for index, call in enumerate(calls):  # a call's name first, then its arguments in two pieces
                arguments = call["function"]["arguments"]
                half = len(arguments) // 2
                self.wfile.write(
                    chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": index,
                                    "id": call["id"],
                                    "type": "function",
                                    "function": {"name": call["function"]["name"], "arguments": ""},
                                }
                            ]
                        }
                    )
                )
                for part in (arguments[:half], arguments[half:]):
                    self.wfile.write(chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]}))
            self.wfile.write(chunk({}, finish="tool_calls" if calls else "stop"))
            if (body.get("stream_options") or {}).get("include_usage"):
                self.wfile.write(chunk({}, with_usage=True))
            self.wfile.write(b"data: [DONE]\n\n")
            if step.get("end_after"):
                self.wfile.flush()
                time.sleep(float(step["end_after"]))
            self.finish_sse()  # the connection stays for the client's next request, as OpenAI's does
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (a cancelled stream)

    def _embeddings(self, body: dict[str, Any]) -> None:
        time.sleep(self.server.state.latency)
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        dims = int(body.get("dimensions") or 384)
        data = []
        for index, text in enumerate(texts):
            seed = sum(ord(c) for c in text) or 1
            vector = [((seed * (i + 1)) % 97) / 97.0 for i in range(dims)]
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = sum(len(t.split()) for t in texts)
        self.send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": body.get("model"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    def _moderations(self, body: dict[str, Any]) -> None:
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        results = []
        for text in texts:
            categories = {name: word in str(text).lower() for word, name in MODERATION_WORDS.items()}
            scores = {name: 0.99 if hit else 0.01 for name, hit in categories.items()}
            results.append({"flagged": any(categories.values()), "categories": categories, "category_scores": scores})
        self.send_json(200, {"id": f"modr-{uuid.uuid4().hex[:12]}", "model": body.get("model"), "results": results})


class FakeUpstreamServer(FakeServer):
    prefix = "/v1"
    state: FakeUpstreamState

    def __init__(self, host: str = "127.0.0.1", port: int = 0, max_requests: int | None = None) -> None:
        super().__init__(Handler, host, port, state=FakeUpstreamState(max_requests))

    def start_in_thread(self) -> FakeUpstreamServer:
        super().start_in_thread()
        return self


def main() -> None:
    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible upstream")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument(
        "--max-requests", type=int, default=None,
        help=f"requests kept for GET /_requests (default: FAKE_UPSTREAM_MAX_REQUESTS, else {DEFAULT_MAX_REQUESTS})",
    )  # fmt: skip
    args = parser.parse_args()
    server = FakeUpstreamServer(port=args.port, max_requests=args.max_requests)
    print(f"fake upstream on {server.base_url}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
