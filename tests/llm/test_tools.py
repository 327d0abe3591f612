"""Tool calls through the gateway: native function calling for models that support it, the text protocol for
the others (the local engine included), the same shapes for the caller either way."""

import json
import uuid

import pytest

from saas.core import crypto
from saas.llm import gateway, local_engine, tool_protocol
from saas.llm.models import LLMCall
from saas.llm.providers import BadRequest, ChatRequest

pytestmark = pytest.mark.django_db

CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate arithmetic.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    },
}
ASK = [{"role": "system", "content": "You are careful."}, {"role": "user", "content": "What is 6 times 7?"}]


@pytest.fixture
def native(models):
    models["small"].supports_tools = True
    models["small"].save(update_fields=["supports_tools"])
    return models


@pytest.mark.parametrize("streaming", [False, True])
def test_a_model_with_function_calling_gets_the_tools_and_its_calls_come_back(fake, native, caller, streaming):
    fake.script("fake-small", {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]})
    request = ChatRequest(ASK, tools=[CALCULATOR])
    call_id = uuid.uuid4()
    if streaming:
        *_, end = list(gateway.chat_stream(caller=caller, model="test-small", request=request, call_id=call_id))
        calls, finish = end.tool_calls, end.finish_reason
    else:
        result = gateway.chat(caller=caller, model="test-small", request=request, call_id=call_id)
        calls, finish = result.tool_calls, result.finish_reason
    assert finish == "tool_calls"
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("calculator", {"expression": "6*7"})]
    sent = fake.requests()[-1]["body"]
    assert sent["tools"] == [CALCULATOR] and "## Tools" not in json.dumps(sent["messages"])
    row = LLMCall.all_orgs.get()
    assert row.pk == call_id and row.cache == "bypass"  # answers with tool calls are never cached
    assert "calculator" in crypto.decrypt(row.output_encrypted)

    # The result goes back as a tool message, and the model answers.
    follow_up = ChatRequest(
        [*ASK, {"role": "assistant", "content": None, "tool_calls": [calls[0].as_message_part()]},
         {"role": "tool", "tool_call_id": calls[0].id, "content": "42"}],
        tools=[CALCULATOR],
    )  # fmt: skip
    fake.script("fake-small", {"reply": "It is 42."})
    assert gateway.chat(caller=caller, model="test-small", request=follow_up).text == "It is 42."
    assert fake.requests()[-1]["body"]["messages"][-1] == {"role": "tool", "tool_call_id": calls[0].id, "content": "42"}


def test_a_model_without_function_calling_is_driven_by_the_text_protocol(fake, models, caller):
    assert not models["small"].supports_tools
    fake.script("fake-small", {"reply": 'Action: calculator\nAction Input: {"expression": "6*7"}'})
    result = gateway.chat(caller=caller, model="test-small", request=ChatRequest(ASK, tools=[CALCULATOR]))
    assert result.text == ""
    (call,) = result.tool_calls
    assert call.name == "calculator" and json.loads(call.arguments) == {"expression": "6*7"}
    sent = fake.requests()[-1]["body"]
    assert "tools" not in sent
    assert "Action Input:" in sent["messages"][0]["content"] and "calculator" in sent["messages"][0]["content"]

    follow_up = ChatRequest(
        [*ASK, {"role": "assistant", "content": None, "tool_calls": [call.as_message_part()]},
         {"role": "tool", "tool_call_id": call.id, "content": "42"}],
        tools=[CALCULATOR],
    )  # fmt: skip
    fake.script("fake-small", {"reply": "Final Answer: It is 42."})
    result = gateway.chat(caller=caller, model="test-small", request=follow_up)
    assert result.text == "It is 42." and result.tool_calls == []
    messages = fake.requests()[-1]["body"]["messages"]
    assert messages[-2] == {"role": "assistant", "content": 'Action: calculator\nAction Input: {"expression": "6*7"}'}
    assert messages[-1] == {"role": "user", "content": "Observation: 42"}


def test_the_text_protocol_parser_is_strict_about_calls_and_lenient_about_answers():
    assert tool_protocol.parse("Final Answer: done") == ("done", [])
    assert tool_protocol.parse("Just an answer.") == ("Just an answer.", [])
    _, (call,) = tool_protocol.parse('Thinking.\nAction: search\nAction Input: ```json\n{"q": "x"}\n```')
    assert (call.name, call.arguments) == ("search", '{"q": "x"}')
    _, (call,) = tool_protocol.parse("Action: search\nAction Input: not json")
    assert call.arguments == "not json"  # passed on: the caller reports the bad arguments to the model
    _, (call,) = tool_protocol.parse("Action: search")
    assert call.arguments == ""


def test_the_local_engine_follows_the_protocol_with_the_registered_policy(caller, monkeypatch):
    def policy(task, tools, called):
        assert [t["name"] for t in tools] == ["calculator"]
        return None if "calculator" in called else ("calculator", {"expression": "6*7"})

    monkeypatch.setattr(local_engine, "_tool_policy", policy)
    messages: list[dict] = [
        {"role": "system", "content": "You answer arithmetic."},
        {"role": "user", "content": "Compute six times seven."},
    ]
    first = gateway.chat(caller=caller, model="local", request=ChatRequest(messages, tools=[CALCULATOR]))
    (call,) = first.tool_calls
    assert call.name == "calculator" and json.loads(call.arguments) == {"expression": "6*7"}
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call.as_message_part()]},
        {"role": "tool", "tool_call_id": call.id, "content": "Six times seven equals 42 exactly."},
    ]
    second = gateway.chat(caller=caller, model="local", request=ChatRequest(messages, tools=[CALCULATOR]))
    assert second.tool_calls == []
    # It quotes the observation, never its own instructions.
    assert second.text.startswith("Six times seven equals 42 exactly.") and "arithmetic" not in second.text


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"role": "tool", "content": "42"}, "tool_call_id"),
        ({"role": "assistant", "content": None}, "content must be a string"),
        ({"role": "user", "content": "x", "tool_calls": [{"id": "a", "function": {}}]}, "tool_calls"),
    ],
)
def test_malformed_tool_messages_are_refused_with_the_field_named(caller, message, error):
    with pytest.raises(BadRequest, match=error):
        gateway.chat(caller=caller, model="local", request=ChatRequest([*ASK, message], tools=[CALCULATOR]))


def test_a_tool_with_a_bad_name_is_refused(caller):
    bad = {"type": "function", "function": {"name": "rm -rf /", "parameters": {}}}
    with pytest.raises(BadRequest, match="tools\\[0\\]"):
        gateway.chat(caller=caller, model="local", request=ChatRequest(ASK, tools=[bad]))
