"""A fake Anthropic Messages API (`POST /v1/messages`, with and without SSE; `GET /v1/models`) on loopback.

Streams send Anthropic's events in order: message_start, content_block_start, ping, content_block_delta
(text_delta, or input_json_delta for a tool_use block), content_block_stop, message_delta (stop_reason and
output tokens), message_stop. Scripted errors use Anthropic's error body (429 rate_limit_error with
retry-after, 500 api_error, 529 overloaded_error). The key `sk-wrong` gets a 401. See saas/llm/fakes/__init__.py.

    python -m saas.llm.fakes.anthropic --port 9101
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from saas.llm.fakes import FakeHandler, FakeServer, echo, words

MODELS = ["claude-haiku-4-5", "claude-sonnet-4-5"]
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}  # fmt: skip


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text")


def _input_tokens(body: dict[str, Any]) -> int:
    words_in = len(str(body.get("system") or "").split())
    words_in += sum(len(json.dumps(m.get("content")).split()) + 3 for m in body.get("messages") or [])
    return max(1, words_in)


class AnthropicHandler(FakeHandler):
    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        kind = ERROR_TYPES.get(status, "api_error")
        self.send_json(status, {"type": "error", "error": {"type": kind, "message": message}}, headers)

    def route(self, method: str, path: str, body: dict[str, Any]) -> None:
        # The SDK sends `x-api-key`, or (anthropic 2.x) `Authorization: Bearer`; the API takes either.
        key = self.headers.get("x-api-key") or (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        if key == "sk-wrong":
            return self.error(401, "invalid x-api-key")
        if method == "GET" and path.split("?")[0] == "/v1/models":
            data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-10-01T00:00:00Z"} for m in MODELS]
            return self.send_json(200, {"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]})
        if method == "POST" and path == "/v1/messages":
            return self.messages(body)
        return self.error(404, "not found")

    def messages(self, body: dict[str, Any]) -> None:
        model = str(body.get("model", ""))
        step = self.server.state.next_step(model)
        time.sleep(step.get("delay", 0))
        if "status" in step:
            headers = {"retry-after": str(step["retry_after"])} if "retry_after" in step else None
            return self.error(step["status"], step.get("message", f"scripted {step['status']}"), headers)
        if not isinstance(body.get("max_tokens"), int):
            return self.error(400, "max_tokens: Field required")
        last: dict[str, Any] = next((m for m in reversed(body.get("messages") or []) if m.get("role") == "user"), {})
        text = step.get("reply", echo(_text(last.get("content"))))
        calls = [{"type": "tool_use", "id": f"toolu_fake{i}{time.monotonic_ns()}", "name": c["name"],
                  "input": c["arguments"] if isinstance(c["arguments"], dict) else json.loads(c["arguments"])}
                 for i, c in enumerate(step.get("tool_calls") or [])]  # fmt: skip
        pieces = words(text) if text and not calls else []
        usage = {"input_tokens": _input_tokens(body), "output_tokens": len(pieces) + 3 * len(calls)}
        stop = "tool_use" if calls else "end_turn"
        ident = f"msg_fake{time.monotonic_ns()}"
        if not body.get("stream"):
            content = ([{"type": "text", "text": text}] if pieces else []) + calls
            return self.send_json(200, {"id": ident, "type": "message", "role": "assistant", "model": model,
                                        "content": content, "stop_reason": stop, "stop_sequence": None,
                                        "usage": usage})  # fmt: skip
        self.start_sse()

        def event(kind: str, payload: dict[str, Any]) -> None:
            self.wfile.write(f"event: {kind}\ndata: {json.dumps({'type': kind, **payload})}\n\n".encode())
            self.wfile.flush()

        started = {"input_tokens": usage["input_tokens"], "output_tokens": 1}
        event("message_start", {"message": {"id": ident, "type": "message", "role": "assistant", "model": model,
                                            "content": [], "stop_reason": None, "stop_sequence": None,
                                            "usage": started}})  # fmt: skip
        index = 0
        if pieces:
            event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
            event("ping", {})
            for i, piece in enumerate(pieces):
                if "disconnect_after" in step and i == step["disconnect_after"]:
                    return  # cut off: no message_stop
                event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
            event("content_block_stop", {"index": 0})
            index = 1
        for call in calls:
            arguments = json.dumps(call["input"])
            half = len(arguments) // 2
            event("content_block_start", {"index": index, "content_block": {**call, "input": {}}})
            for part in (arguments[:half], arguments[half:]):
                event(
                    "content_block_delta", {"index": index, "delta": {"type": "input_json_delta", "partial_json": part}}
                )
            event("content_block_stop", {"index": index})
            index += 1
        event("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None},
                                "usage": {"output_tokens": usage["output_tokens"]}})  # fmt: skip
        event("message_stop", {})


class FakeAnthropicServer(FakeServer):
    """The SDK's base URL is the root (it adds /v1/messages itself)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(AnthropicHandler, host, port)


def main() -> None:
    parser = argparse.ArgumentParser(description="A fake Anthropic Messages API")
    parser.add_argument("--port", type=int, default=9101)
    server = FakeAnthropicServer(port=parser.parse_args().port)
    print(f"fake Anthropic on {server.base_url}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
