"""The `local` provider: Crewdesk's offline, deterministic, extractive engine, the default when no model
provider is configured.

It is not a generative model and never pretends to be one. It splits the context it is given (system
messages and the conversation so far) into sentences, ranks them by embedding similarity to the latest user
message, and answers with the best few, verbatim, each followed by a citation marker: the source's own label
when the context numbers its sources (`[2] ...`), else the number of the message it came from. When nothing
is similar enough it says so. It quotes system messages only when the conversation holds no other source (in
a documents question the sources are the system message; in a crew's task they are the task's context and the
tool results, and the system message is the agent's instructions).

It follows one instruction: when the system message numbers the sources (a documents question) and has
instructions that never ask for citations, it leaves the markers out, as a model would; an eval run of a prompt
version that dropped the citation rule scores what that prompt does (analytics/evals.py).

Offered tools (the gateway's text tool protocol, saas/llm/tool_protocol.py), it follows the protocol: it asks
the tool policy registered by the layer that owns the tools (agents registers one for Crewdesk's built-in
tools) which call to make next, and answers (`Final Answer:`) when the policy has none. A `tool_choice` of
`required` or a named function makes it call a tool even when the policy has none: the named one, or the one
whose name and description are closest to the request, with arguments filled from the request's passages
(saas/llm/schema_fill.py); `none` makes it answer.

Asked for JSON (`response_format`), it answers `{"answer": ...}` for `json_object`, and for `json_schema` it
fills the schema field by field from the passages that best match each field (see schema_fill): structured,
valid, and still extractive.
"""

import json
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from typing import Any

from saas.llm import schema_fill, tool_protocol
from saas.llm.embeddings import DIMENSIONS, embed_local
from saas.llm.providers import (
    BadRequest,
    ChatRequest,
    ChatResult,
    EmbeddingResult,
    StreamEnd,
    Usage,
    estimate_prompt_tokens,
    estimate_tokens,
)

ENGINE_LABEL = "local-extractive"
MIN_SIMILARITY = 0.35
MAX_SENTENCES = 3
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
SOURCE_LABEL = re.compile(r"^\s*\[(\d{1,3})\]\s*")
CITATION = re.compile(r"\s*\[(\d{1,3})\](?=\s|$)")
ASKS_TO_CITE = re.compile(r"\bcit(?:e|es|ing|ation|ations)\b", re.IGNORECASE)
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:[.,]\d+)?(?![\w])")
NOTHING_FOUND = "I could not find anything in the provided context that answers this."
NO_CONTEXT = (
    "I am Crewdesk's offline extractive engine: I answer only by quoting the documents or conversation I am "
    "given, and there is nothing here to quote. Configure a model provider for generated answers."
)


@dataclass(frozen=True)
class Sentence:
    text: str
    label: str
    position: int


# (the task or question, the offered tool specs, the names of the tools already called) -> the next call as
# (tool name, arguments), or None to answer now.
ToolPolicy = Callable[[str, list[dict[str, Any]], list[str]], tuple[str, dict[str, Any]] | None]
_tool_policy: ToolPolicy | None = None


def register_tool_policy(policy: ToolPolicy) -> None:
    global _tool_policy
    _tool_policy = policy


def _is_observation(message: dict[str, Any]) -> bool:
    return message["role"] == "user" and str(message.get("content") or "").startswith("Observation:")


def _is_call(message: dict[str, Any]) -> bool:
    return message["role"] == "assistant" and str(message.get("content") or "").lstrip().startswith("Action:")


def _sentences(request: ChatRequest) -> tuple[str, list[Sentence]]:
    user_indexes = [i for i, m in enumerate(request.messages) if m["role"] == "user" and not _is_observation(m)]
    question_index = user_indexes[-1] if user_indexes else len(request.messages) - 1
    question = request.messages[question_index]["content"] if request.messages else ""
    found: list[Sentence] = []
    # A message that states facts and then asks ("Refunds take 30 days. How long do refunds take?"): its
    # questions are the query, its other sentences are context like any other.
    pieces = SENTENCE_END.split(question.strip())
    asked = [p for p in pieces if p.rstrip().endswith("?")]
    if asked and len(asked) < len(pieces):
        question = " ".join(asked)
        for piece in pieces:
            if piece not in asked and len(piece.split()) >= 3:
                found.append(Sentence(piece.strip(), str(question_index + 1), len(found)))
    others = [
        i for i, m in enumerate(request.messages)
        if i != question_index and m["role"] != "system" and not _is_call(m)
    ]  # fmt: skip
    for index, message in enumerate(request.messages):
        if index == question_index or _is_call(message):
            continue
        if message["role"] == "system" and others:
            continue  # instructions, not a source, when the conversation holds sources of its own
        label = str(index + 1)
        content = str(message.get("content") or "").removeprefix("Observation:")
        for line in content.splitlines():
            source = SOURCE_LABEL.match(line)
            if source:
                label, line = source.group(1), line[source.end() :]
            if line.rstrip().endswith(":"):
                continue  # a line introducing what follows ("[2] handbook, page 3:") states nothing itself
            for text, cited in _cited_parts(line, label):
                for piece in SENTENCE_END.split(text.strip()):
                    if len(piece.split()) >= 3:
                        found.append(Sentence(piece.strip(), cited, len(found)))
    return question, found


def _cited_parts(line: str, label: str) -> list[tuple[str, str]]:
    """A line of an earlier answer keeps its citations: "A. [2] B. [3]" is A cited [2] and B cited [3];
    text after the last marker has the line's own label."""
    parts = CITATION.split(line)
    pairs = [(parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]
    return [*pairs, (parts[-1], label)]


def _cites(request: ChatRequest) -> bool:
    """Whether to mark each sentence with its source: always, unless the system message numbers the sources
    and has instructions (lines that are not sources) that say nothing about citing them."""
    system = [str(m.get("content") or "") for m in request.messages if m["role"] == "system"]
    lines = [line for content in system for line in content.splitlines()]
    if not any(SOURCE_LABEL.match(line) for line in lines):
        return True
    instructions = [line for line in lines if line.strip() and not SOURCE_LABEL.match(line)]
    return not instructions or any(ASKS_TO_CITE.search(line) for line in instructions)


def answer(request: ChatRequest) -> str:
    question, sentences = _sentences(request)
    if not sentences:
        return NO_CONTEXT
    vectors = embed_local([question] + [s.text for s in sentences])
    query, rest = vectors[0], vectors[1:]
    scored = [(sum(a * b for a, b in zip(query, v, strict=True)), s) for v, s in zip(rest, sentences, strict=True)]
    best = sorted((pair for pair in scored if pair[0] >= MIN_SIMILARITY), key=lambda p: -p[0])[:MAX_SENTENCES]
    if not best:
        return NOTHING_FOUND
    chosen = sorted((s for _, s in best), key=lambda s: s.position)  # in reading order
    if not _cites(request):
        return " ".join(s.text for s in chosen)
    return " ".join(f"{s.text} [{s.label}]" for s in chosen)


def reply(request: ChatRequest) -> str:
    """The answer, or under the tool protocol the next call or the final answer."""
    tools = tool_protocol.offered_tools(request.messages)
    request = _without_protocol(request)
    if tools is None or request.tool_choice == "none":
        return _answer_as_asked(request)
    called = [call.name for m in request.messages if _is_call(m) for call in tool_protocol.parse(str(m["content"]))[1]]
    task = next((m for m in reversed(request.messages) if m["role"] == "user" and not _is_observation(m)), None)
    task_text = str(task["content"]) if task else ""
    choice = _tool_policy(task_text, tools, called) if _tool_policy else None
    forced = _forced_tool(request.tool_choice, tools, task_text)
    if forced is not None and (choice is None or choice[0] != forced["name"]):
        parameters = forced.get("parameters") or {"type": "object", "properties": {}}
        choice = forced["name"], schema_fill.fill(parameters, Passages(request), hint="")
    if choice is not None:
        name, arguments = choice
        return tool_protocol.render_call(name, json.dumps(arguments, ensure_ascii=False))
    return "Final Answer: " + _answer_as_asked(request)


def _forced_tool(tool_choice: Any, tools: list[dict[str, Any]], task: str) -> dict[str, Any] | None:
    """The tool a `tool_choice` forces: the named function, or for `required` the closest to the task."""
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        return next((t for t in tools if t["name"] == name), None)
    if tool_choice != "required" or not tools:
        return None
    labels = [f"{schema_fill.words(t['name'])}: {t.get('description', '')}" for t in tools]
    vectors = embed_local([task or "call a tool", *labels])
    scores = [sum(a * b for a, b in zip(vectors[0], v, strict=True)) for v in vectors[1:]]
    return tools[max(range(len(tools)), key=scores.__getitem__)]


def _without_protocol(request: ChatRequest) -> ChatRequest:
    """The request without the tool protocol's description (instructions, not a source to quote)."""
    messages = [
        {**m, "content": str(m.get("content") or "").split(tool_protocol.PROTOCOL_HEADER, 1)[0].rstrip()}
        if m["role"] == "system" else m
        for m in request.messages
    ]  # fmt: skip
    return replace(request, messages=[m for m in messages if m["role"] != "system" or m["content"]])


def _answer_as_asked(request: ChatRequest) -> str:
    """The answer as text, or as the JSON the request's `response_format` asks for."""
    kind = (request.response_format or {}).get("type")
    if kind == "json_schema":
        spec = request.response_format.get("json_schema") or {}  # type: ignore[union-attr]
        value = schema_fill.fill(spec.get("schema") or {"type": "object"}, Passages(request))
        return json.dumps(value, ensure_ascii=False)
    if kind == "json_object":
        return json.dumps({"answer": answer(request)}, ensure_ascii=False)
    return answer(request)


class Passages:
    """The request's passages as a schema_fill.Source: each field gets the passages closest to its name and
    the question together; the prompt's own sentences are the passages when there is nothing else."""

    def __init__(self, request: ChatRequest) -> None:
        self.question, self.sentences = _sentences(request)
        if not self.sentences:
            pieces = SENTENCE_END.split(self.question.strip())
            self.sentences = [Sentence(p.strip(), "1", i) for i, p in enumerate(pieces) if p.strip()]
        self.vectors = embed_local([s.text for s in self.sentences])
        self.ranked: dict[str, list[tuple[float, Sentence]]] = {}

    def rank(self, hint: str) -> list[tuple[float, Sentence]]:
        if hint not in self.ranked:
            query = embed_local([f"{hint}: {self.question}" if hint else self.question])[0]
            scored = [(sum(a * b for a, b in zip(query, v, strict=True)), s)
                      for v, s in zip(self.vectors, self.sentences, strict=True)]  # fmt: skip
            self.ranked[hint] = sorted(scored, key=lambda p: -p[0])
        return self.ranked[hint]

    def text(self, hint: str, index: int) -> str:
        ranked = self.rank(hint)
        return ranked[min(index, len(ranked) - 1)][1].text if ranked else ""

    def number(self, hint: str) -> float | None:
        for _, sentence in self.rank(hint):
            if found := NUMBER.search(sentence.text):
                return float(found.group(0).replace(",", "."))
        return None

    def flag(self, hint: str) -> bool:
        ranked = self.rank(hint)
        return bool(ranked) and ranked[0][0] >= MIN_SIMILARITY

    def choose(self, hint: str, options: list[Any]) -> Any:
        best = self.text(hint, 0) or self.question
        vectors = embed_local([best, *(str(o) for o in options)])
        scores = [sum(a * b for a, b in zip(vectors[0], v, strict=True)) for v in vectors[1:]]
        return options[max(range(len(options)), key=scores.__getitem__)]


def _stopped(text: str, request: ChatRequest) -> str:
    """The text cut before the first of the request's `stop` sequences."""
    stop = (request.options or {}).get("stop")
    cuts = [text.find(s) for s in ([stop] if isinstance(stop, str) else stop or []) if s and s in text]
    return text[: min(cuts)] if cuts else text


class LocalProvider:
    label = ENGINE_LABEL

    def embed(self, model: str, texts: list[str], *, dimensions: int, timeout: float) -> EmbeddingResult:
        if dimensions != DIMENSIONS:
            raise BadRequest(f"The local embedding model has {DIMENSIONS} dimensions, not {dimensions}.")
        return EmbeddingResult(embed_local(texts), Usage(sum(estimate_tokens(t) for t in texts), 0, estimated=True))

    def complete(self, model: str, request: ChatRequest, *, timeout: float) -> ChatResult:
        text = _stopped(reply(request), request)
        return ChatResult(text, Usage(estimate_prompt_tokens(request.messages), estimate_tokens(text), estimated=True))

    def stream(self, model: str, request: ChatRequest, *, timeout: float) -> Generator[str | StreamEnd, None, None]:
        text = _stopped(reply(request), request)
        words = text.split(" ")
        for i, word in enumerate(words):
            yield word if i == 0 else " " + word
        yield StreamEnd(Usage(estimate_prompt_tokens(request.messages), estimate_tokens(text), estimated=True))
