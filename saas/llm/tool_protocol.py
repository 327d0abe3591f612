"""Tool calls for models without native function calling (the local engine included): a strict text protocol.

Callers of the gateway always speak OpenAI's function-calling shapes (`tools` on the request, `tool_calls` on
assistant messages, `role: tool` results). For a model whose registry entry says `supports_tools: false`, the
gateway rewrites the request into plain messages: the tools and the protocol are described at the end of the
system message, earlier calls become their `Action:` text and results become `Observation:` messages. The
reply is parsed back into tool calls, so a caller cannot tell which way a model was driven.

A reply is either a call, exactly

    Action: <tool name>
    Action Input: <one JSON object>

or an answer (`Final Answer: ...`, or any text without an `Action:` line). The arguments are passed on as the
raw text the model wrote: deciding whether they are valid JSON for the tool is the caller's job, as it is with
native function calling.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

PROTOCOL_HEADER = "## Tools"
_TOOLS_LINE = "Tools (JSON): "
_ACTION = re.compile(r"^\s*Action:\s*(?P<name>[^\n]*?)\s*$", re.MULTILINE)
_ACTION_INPUT = re.compile(r"^\s*Action Input:\s*(?P<input>.*)\Z", re.MULTILINE | re.DOTALL)
_FINAL = re.compile(r"^\s*Final Answer:\s*", re.MULTILINE)
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # the JSON text the model wrote, unparsed

    def as_message_part(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def describe(tools: list[dict[str, Any]]) -> str:
    """The protocol, appended to the system message."""
    specs = [
        {"name": t["function"]["name"], "description": t["function"].get("description", ""),
         "parameters": t["function"].get("parameters", {})}
        for t in tools
    ]  # fmt: skip
    return (
        f"{PROTOCOL_HEADER}\n"
        "You can use these tools. To use one, reply with exactly these two lines and nothing else:\n"
        "Action: <tool name>\n"
        "Action Input: <the arguments as one JSON object>\n"
        "You will get the result in a message starting with `Observation:`. "
        "When you have what you need, reply with `Final Answer:` followed by your answer.\n"
        f"{_TOOLS_LINE}{json.dumps(specs, separators=(',', ':'))}"
    )


def offered_tools(messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The tool specs a rewritten request offers (name, description, parameters), or None without the protocol."""
    for message in messages:
        content = message.get("content")
        if message.get("role") == "system" and isinstance(content, str) and PROTOCOL_HEADER in content:
            line = next((ln for ln in content.splitlines() if ln.startswith(_TOOLS_LINE)), None)
            if line is not None:
                specs = json.loads(line[len(_TOOLS_LINE) :])
                return specs if isinstance(specs, list) else None
    return None


def render_call(name: str, arguments: str) -> str:
    return f"Action: {name}\nAction Input: {arguments}"


def to_text_messages(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation for a model without function calling."""
    protocol = describe(tools)
    rewritten: list[dict[str, Any]] = []
    described = False
    for message in messages:
        role, content = message["role"], message.get("content") or ""
        if role == "system" and not described:
            rewritten.append({"role": "system", "content": f"{content}\n\n{protocol}".strip()})
            described = True
        elif role == "assistant" and message.get("tool_calls"):
            calls = [render_call(c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]]
            rewritten.append({"role": "assistant", "content": "\n".join(filter(None, [content, *calls]))})
        elif role == "tool":
            rewritten.append({"role": "user", "content": f"Observation: {content}"})
        else:
            rewritten.append({"role": role, "content": content})
    if not described:
        rewritten.insert(0, {"role": "system", "content": protocol})
    return rewritten


def parse(text: str) -> tuple[str, list[ToolCall]]:
    """(answer text, tool calls) from a protocol reply: a call and no answer, or an answer and no call."""
    action = _ACTION.search(text)
    if action is None:
        final = _FINAL.search(text)
        return (text[final.end() :] if final else text).strip(), []
    after = text[action.end() :]
    given = _ACTION_INPUT.search(after)
    arguments = _FENCE.sub("", given.group("input").strip()) if given else ""
    final = _FINAL.search(arguments)
    if final is not None:  # a model that wrote a call and then an answer made the call: the answer is not seen yet
        arguments = arguments[: final.start()].strip()
    return "", [ToolCall(new_call_id(), action.group("name").strip(), arguments)]
