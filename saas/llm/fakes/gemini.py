"""A fake Gemini API on loopback: `POST /v1/models/{model}:generateContent` (or /v1beta),
`:streamGenerateContent?alt=sse`, `:batchEmbedContents` and `GET /v1/models`, in Gemini's JSON (camelCase;
candidates with parts, text or
functionCall; usageMetadata). Scripted errors use Google's error body (429 RESOURCE_EXHAUSTED, 500 INTERNAL,
503 UNAVAILABLE). The key `sk-wrong` gets a 400 API_KEY_INVALID, as Gemini answers. See saas/llm/fakes/__init__.py.

    python -m saas.llm.fakes.gemini --port 9102
"""

from __future__ import annotations

import argparse
import json
import re
import time
from typing import Any

from saas.llm.fakes import FakeHandler, FakeServer, echo, words

MODELS = {"gemini-2.5-flash": "generateContent", "gemini-2.5-pro": "generateContent",
          "gemini-embedding-001": "embedContent"}  # fmt: skip
STATUSES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
ROUTE = re.compile(r"^/v1(?:beta\d*)?/models/(?P<model>[^:/]+):(?P<method>\w+)(?:\?.*)?$")


def _text(content: dict[str, Any]) -> str:
    return "".join(p.get("text", "") for p in content.get("parts") or [] if isinstance(p, dict))


class GeminiHandler(FakeHandler):
    def error(self, status: int, message: str) -> None:
        self.send_json(
            status, {"error": {"code": status, "message": message, "status": STATUSES.get(status, "UNKNOWN")}}
        )

    def route(self, method: str, path: str, body: dict[str, Any]) -> None:
        if self.headers.get("x-goog-api-key") == "sk-wrong":
            return self.error(400, "API key not valid. Please pass a valid API key. (API_KEY_INVALID)")
        if method == "GET" and path.split("?")[0] in ("/v1/models", "/v1beta/models"):
            models = [{"name": f"models/{m}", "displayName": m, "supportedGenerationMethods": [action]}
                      for m, action in MODELS.items()]  # fmt: skip
            return self.send_json(200, {"models": models})
        match = ROUTE.match(path)
        if method != "POST" or match is None:
            return self.error(404, "not found")
        if match["method"] == "batchEmbedContents":
            return self.embed(body)
        if match["method"] in ("generateContent", "streamGenerateContent"):
            return self.generate(match["model"], body, stream=match["method"] == "streamGenerateContent")
        return self.error(404, "not found")

    def generate(self, model: str, body: dict[str, Any], *, stream: bool) -> None:
        step = self.server.state.next_step(model)
        time.sleep(step.get("delay", 0))
        if "status" in step:
            return self.error(step["status"], step.get("message", f"scripted {step['status']}"))
        contents = body.get("contents") or []
        last: dict[str, Any] = next((c for c in reversed(contents) if c.get("role") == "user"), {})
        text = step.get("reply", echo(_text(last)))
        calls = [{"functionCall": {"name": c["name"], "args": c["arguments"] if isinstance(c["arguments"], dict)
                                   else json.loads(c["arguments"])}} for c in step.get("tool_calls") or []]  # fmt: skip
        pieces = words(text) if text and not calls else []
        prompt = max(1, sum(len(json.dumps(c).split()) for c in contents))
        usage = {"promptTokenCount": prompt, "candidatesTokenCount": len(pieces) + 3 * len(calls),
                 "totalTokenCount": prompt + len(pieces) + 3 * len(calls)}  # fmt: skip
        ident = f"resp-fake{time.monotonic_ns()}"

        def response(parts: list[dict[str, Any]], finish: str | None, with_usage: bool) -> dict[str, Any]:
            candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
            if finish:
                candidate["finishReason"] = finish
            payload: dict[str, Any] = {"candidates": [candidate], "modelVersion": model, "responseId": ident}
            if with_usage:
                payload["usageMetadata"] = usage
            return payload

        if not stream:
            parts = ([{"text": text}] if pieces else []) + calls
            return self.send_json(200, response(parts, "STOP", True))
        self.start_sse()
        for i, piece in enumerate(pieces):
            if "disconnect_after" in step and i == step["disconnect_after"]:
                return
            last_piece = i == len(pieces) - 1 and not calls
            chunk = response([{"text": piece}], "STOP" if last_piece else None, last_piece)
            self.wfile.write(f"data: {json.dumps(chunk)}\r\n\r\n".encode())
            self.wfile.flush()
        if calls:
            self.wfile.write(f"data: {json.dumps(response(calls, 'STOP', True))}\r\n\r\n".encode())
            self.wfile.flush()

    def embed(self, body: dict[str, Any]) -> None:
        embeddings = []
        for request in body.get("requests") or []:
            text = _text(request.get("content") or {})
            dims = int(request.get("outputDimensionality") or 768)
            seed = sum(ord(c) for c in text) or 1
            embeddings.append({"values": [((seed * (i + 1)) % 97) / 97.0 for i in range(dims)]})
        self.send_json(200, {"embeddings": embeddings})


class FakeGeminiServer(FakeServer):
    """The SDK's base URL is the root (it adds /v1/models/... itself)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(GeminiHandler, host, port)


def main() -> None:
    parser = argparse.ArgumentParser(description="A fake Gemini API")
    parser.add_argument("--port", type=int, default=9102)
    server = FakeGeminiServer(port=parser.parse_args().port)
    print(f"fake Gemini on {server.base_url}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
