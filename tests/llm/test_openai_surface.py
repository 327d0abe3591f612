"""The whole OpenAI surface on /v1 (issue #15): tools and tool_choice, response_format checked before the
answer leaves (and retried once), the parameters passed to the upstream, every OpenAI parameter accepted,
embeddings in base64, models with their capabilities; the local engine honouring tool_choice and json_schema.
In process (the APIClient) against the fake upstream and the local engine; tests/llm/test_clients.py runs the
real client libraries against a live server."""

import base64
import json
import struct
from decimal import Decimal
from typing import Any

import jsonschema
import pytest

from saas.llm.models import LLMCall, ModelConfig
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import OrganizationFactory

pytestmark = pytest.mark.django_db

MESSAGES = [{"role": "user", "content": "Say something"}]
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "The person's name"},
        "age": {"type": "integer", "minimum": 0},
        "city": {"type": "string"},
        "employed": {"type": "boolean"},
    },
    "required": ["name", "age", "city", "employed"],
    "additionalProperties": False,
}
PERSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}


@pytest.fixture
def client(db):
    return key_client(issue_key(OrganizationFactory(), scopes=["read", "ask"]).secret)


@pytest.fixture
def native(models):
    """test-small as a model with native function calling and JSON mode."""
    models["small"].supports_tools = models["small"].supports_json = True
    models["small"].save()
    return models["small"]


@pytest.fixture
def local_models(db):
    ModelConfig.objects.all().delete()
    ModelConfig.objects.create(alias="local", upstream="local", upstream_model="extractive-minilm", tier="small",
                               input_price_per_mtok=Decimal(0), output_price_per_mtok=Decimal(0),
                               context_window=32768)  # fmt: skip
    ModelConfig.objects.create(alias="local-minilm", kind="embedding", upstream="local",
                               upstream_model="all-MiniLM-L6-v2", input_price_per_mtok=Decimal(0),
                               output_price_per_mtok=Decimal(0), context_window=512)  # fmt: skip


def _post(client, **body):
    return client.post("/v1/chat/completions", {"model": "test-small", "messages": MESSAGES, **body}, format="json")


# --- Parameters ---------------------------------------------------------------------------------------------


def test_parameters_openai_accepts_are_accepted_and_unknown_ones_refused_like_openai(client, fake, native):
    ignored = {
        "metadata": {"team": "x"}, "store": False, "service_tier": "auto", "reasoning_effort": "low",
        "modalities": ["text"], "prediction": None, "logit_bias": {"50256": -100}, "web_search_options": {},
    }  # fmt: skip
    response = _post(client, **ignored)
    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["message"]["content"].startswith("The quick")
    refused = _post(client, temprature=0.5)
    assert refused.status_code == 400
    assert refused.json()["error"] == {
        "message": "temprature: Unrecognized request argument supplied: temprature",
        "type": "invalid_request_error", "param": "temprature", "code": "invalid",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"n": 2}, "n", "Only n=1"),
        ({"functions": [{"name": "f"}]}, "functions", "use `tools`"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice",
         "not in `tools`"),
        ({"tool_choice": "required"}, "tool_choice", "needs `tools`"),
        ({"tools": [WEATHER, WEATHER]}, "tools", "name of its own"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}},
         "response_format", "not a valid JSON Schema"),
        ({"response_format": {"type": "json_schema"}}, "response_format", "needs `json_schema`"),
        ({"response_format": {"type": "yaml"}}, "response_format", ""),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
         "messages", "only text content parts"),
        ({"top_logprobs": 50}, "top_logprobs", ""),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", ""),
    ],
)  # fmt: skip
def test_bad_parameters_are_a_clear_openai_style_400_and_nothing_is_sent(client, fake, native, body, param, words):
    response = _post(client, **body)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and words in error["message"]
    assert fake.requests() == []


def test_the_parameters_reach_the_upstream_and_logprobs_come_back(client, fake, native):
    response = _post(client, tools=[WEATHER], tool_choice="none", parallel_tool_calls=False, stop=["lazy"], seed=7,
                     logprobs=True, top_logprobs=2, user="alice@example.com", top_p=0.5, presence_penalty=0.1,
                     frequency_penalty=0.2, temperature=0.3, max_completion_tokens=50)  # fmt: skip
    assert response.status_code == 200, response.content
    sent = fake.requests()[-1]["body"]
    assert sent["tools"] == [WEATHER] and sent["tool_choice"] == "none" and sent["parallel_tool_calls"] is False
    assert (sent["stop"], sent["seed"], sent["logprobs"], sent["top_logprobs"]) == (["lazy"], 7, True, 2)
    assert (sent["top_p"], sent["presence_penalty"], sent["frequency_penalty"]) == (0.5, 0.1, 0.2)
    # The end user's id goes upstream as a stable pseudonym, not as the address it is.
    assert sent["user"] != "alice@example.com" and len(sent["user"]) == 32
    choice = response.json()["choices"][0]
    assert choice["message"]["content"] == "The quick brown fox jumps over the "  # cut before the stop sequence
    assert [t["token"] for t in choice["logprobs"]["content"]][:2] == ["The", " quick"]
    assert len(choice["logprobs"]["content"][0]["top_logprobs"]) == 1


def test_a_different_stop_or_seed_is_not_answered_from_the_cache(client, fake, native):
    first = _post(client, stop=["fox"]).json()
    second = _post(client, stop=["lazy"]).json()
    assert first["choices"][0]["message"]["content"] == "The quick brown "
    assert second["choices"][0]["message"]["content"] == "The quick brown fox jumps over the "
    assert not second["crewdesk"]["cached"] and len(fake.requests()) == 2
    assert _post(client, stop=["lazy"]).json()["crewdesk"]["cached"]


# --- Tools --------------------------------------------------------------------------------------------------


def test_a_forced_tool_call_and_its_result_in_openai_shapes(client, fake, native):
    forced = {"type": "function", "function": {"name": "get_weather"}}
    response = _post(client, tools=[WEATHER], tool_choice=forced)
    assert response.status_code == 200, response.content
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "city", "unit": "celsius"}
    # The conversation goes on with the call and its result, as OpenAI's clients send them.
    followup = [*MESSAGES, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": call["id"], "content": "21 degrees"}]  # fmt: skip
    again = _post(client, messages=followup, tools=[WEATHER])
    assert again.status_code == 200 and again.json()["choices"][0]["finish_reason"] == "stop"
    sent = fake.requests()[-1]["body"]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call["id"] and sent[2] == followup[2]


def test_streaming_tool_calls_arrive_as_openai_deltas(client, fake, native):
    response = _post(client, tools=[WEATHER], tool_choice="required", stream=True,
                     stream_options={"include_usage": True})  # fmt: skip
    events = [json.loads(line[6:]) for line in b"".join(response.streaming_content).decode().split("\n\n")
              if line.startswith("data: {")]  # fmt: skip
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    named = [d["tool_calls"][0] for d in deltas if d.get("tool_calls") and "id" in d["tool_calls"][0]]
    assert [(c["index"], c["type"], c["function"]["name"]) for c in named] == [(0, "function", "get_weather")]
    arguments = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas if d.get("tool_calls"))
    assert json.loads(arguments) == {"city": "city", "unit": "celsius"}
    assert [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1] == "tool_calls"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] > 0


def test_message_content_as_text_parts_is_read_as_text(client, fake, native):
    parts = [{"type": "text", "text": "echo: part one"}, {"type": "text", "text": "part two"}]
    response = _post(client, messages=[{"role": "user", "content": parts}])
    assert response.json()["choices"][0]["message"]["content"] == "part one\npart two"


# --- Structured output --------------------------------------------------------------------------------------


def test_json_schema_answers_are_checked(client, fake, native):
    response = _post(client, response_format=PERSON_FORMAT)
    assert response.status_code == 200, response.content
    jsonschema.validate(json.loads(response.json()["choices"][0]["message"]["content"]), PERSON)
    assert len(fake.requests()) == 1
    json_object = _post(client, response_format={"type": "json_object"})
    assert json.loads(json_object.json()["choices"][0]["message"]["content"]) == {
        "answer": "The quick brown fox jumps over the lazy dog."
    }


@pytest.mark.parametrize("bad", ["Sure! Here is the JSON: {", '{"name": "Ann", "age": "old"}'])
def test_an_invalid_answer_is_asked_for_once_more(client, fake, native, bad):
    good = {"name": "Ann", "age": 31, "city": "Oslo", "employed": True}
    fake.script("fake-small", {"reply": bad}, {"reply": json.dumps(good)})
    response = _post(client, response_format=PERSON_FORMAT)
    assert response.status_code == 200, response.content
    assert json.loads(response.json()["choices"][0]["message"]["content"]) == good
    _, second = fake.requests()
    # The second request quotes the bad answer and what was wrong with it.
    assert second["body"]["messages"][-2] == {"role": "assistant", "content": bad}
    assert "Reply again with only the JSON" in second["body"]["messages"][-1]["content"]
    call = LLMCall.all_orgs.get()
    assert call.status == "ok" and call.completion_tokens == response.json()["usage"]["completion_tokens"]
    assert call.completion_tokens > len(good)  # both answers were paid for


@pytest.mark.parametrize(
    ("bad", "words"),
    [("not json at all", "is not valid JSON"), ('{"name": "Ann"}', "does not match the schema at the top level"),
     ('{"name": "Ann", "age": -4, "city": "x", "employed": false}', "does not match the schema at age")],
)  # fmt: skip
def test_two_invalid_answers_are_a_502_with_the_validation_error(client, fake, native, bad, words):
    fake.script("fake-small", {"reply": bad}, {"reply": bad})
    response = _post(client, response_format=PERSON_FORMAT)
    assert response.status_code == 502, response.content
    error = response.json()["error"]
    assert error["type"] == "api_error" and error["code"] == "invalid_structured_output" and words in error["message"]
    assert len(fake.requests()) == 2  # once more, not more
    assert LLMCall.all_orgs.get().error_class == "invalid_structured_output"
    fake.script("fake-small", {"reply": bad}, {"reply": bad})
    streamed = _post(client, response_format=PERSON_FORMAT, stream=True)
    assert streamed.status_code == 502 and streamed.json()["error"]["code"] == "invalid_structured_output"


def test_a_streamed_json_answer_is_checked_before_it_leaves(client, fake, native):
    fake.script("fake-small", {"reply": "{oops"})
    response = _post(client, response_format=PERSON_FORMAT, stream=True)
    events = [json.loads(line[6:]) for line in b"".join(response.streaming_content).decode().split("\n\n")
              if line.startswith("data: {")]  # fmt: skip
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    jsonschema.validate(json.loads(text), PERSON)
    assert "oops" not in text and len(fake.requests()) == 2


# --- Embeddings and models ----------------------------------------------------------------------------------


def test_embeddings_in_base64_are_the_same_vectors_as_floats(client, local_models):
    floats = client.post("/v1/embeddings", {"input": ["refund policy"]}, format="json").json()
    encoded = client.post("/v1/embeddings", {"input": ["refund policy"], "encoding_format": "base64"},
                          format="json").json()  # fmt: skip
    raw = base64.b64decode(encoded["data"][0]["embedding"])
    vector = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    assert len(vector) == 384 and vector == pytest.approx(floats["data"][0]["embedding"], abs=1e-6)
    bad = client.post("/v1/embeddings", {"input": "x", "dimensions": 256}, format="json")
    assert bad.status_code == 400 and "384 dimensions, not 256" in bad.json()["error"]["message"]
    wrong = client.post("/v1/embeddings", {"input": "x", "encoding_format": "int8"}, format="json")
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "encoding_format"


def test_models_list_their_capabilities(client, local_models, fake, native_registry):
    data = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert data["local"]["crewdesk"]["capabilities"] == {
        "chat": True, "embeddings": False, "streaming": True, "stream_usage": True, "tools": True,
        "tool_calling": "text_protocol", "json_schema": True, "json_schema_native": True, "logprobs": False,
    }  # fmt: skip
    assert data["local-minilm"]["crewdesk"]["capabilities"]["dimensions"] == [384]
    assert data["local-minilm"]["crewdesk"]["capabilities"]["chat"] is False
    native_caps = data["gpt-native"]["crewdesk"]["capabilities"]
    assert native_caps["tool_calling"] == "native" and native_caps["logprobs"] is True


@pytest.fixture
def native_registry(db):
    ModelConfig.objects.create(alias="gpt-native", upstream="openai", upstream_model="fake-small", tier="small",
                               input_price_per_mtok=Decimal(1), output_price_per_mtok=Decimal(1), context_window=4096,
                               supports_tools=True, supports_json=True)  # fmt: skip


# --- The local engine ---------------------------------------------------------------------------------------

FACTS = [
    {"role": "system", "content": "[1] Ann Berg is 31 years old. She lives in Oslo and works as a nurse.\n"
                                  "[2] The hospital cafeteria opens at 7 am."},
    {"role": "user", "content": "Who is the nurse and how old is she?"},
]  # fmt: skip


def test_the_local_engine_fills_a_json_schema_from_the_passages_and_says_so(client, local_models):
    response = _post(client, model="local", messages=FACTS, response_format=PERSON_FORMAT)
    assert response.status_code == 200, response.content
    body = response.json()
    value = json.loads(body["choices"][0]["message"]["content"])
    jsonschema.validate(value, PERSON)
    # Extractive: each string is the passage sentence closest to its field, each number the first in them.
    sentences = {
        "Ann Berg is 31 years old.",
        "She lives in Oslo and works as a nurse.",
        "The hospital cafeteria opens at 7 am.",
    }
    assert value["age"] == 31 and "Oslo" in value["city"] and value["name"] in sentences
    assert body["crewdesk"]["engine"] == "local-extractive" and "json_schema filled" in body["crewdesk"]["engine_note"]


def test_the_local_engine_calls_the_tool_tool_choice_asks_for(client, local_models):
    parameters = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    function = {"name": "lookup_staff", "description": "Find a staff member's record", "parameters": parameters}
    lookup: dict[str, Any] = {"type": "function", "function": function}
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        response = _post(client, model="local", messages=FACTS, tools=[lookup, WEATHER], tool_choice=choice)
        assert response.status_code == 200, response.content
        body = response.json()
        (call,) = body["choices"][0]["message"]["tool_calls"]
        expected = "lookup_staff" if choice == "required" else "get_weather"
        assert call["function"]["name"] == expected and body["choices"][0]["finish_reason"] == "tool_calls"
        arguments = json.loads(call["function"]["arguments"])
        parameters = (lookup if expected == "lookup_staff" else WEATHER)["function"]["parameters"]
        jsonschema.validate(arguments, parameters)
        assert "tool arguments filled" in body["crewdesk"]["engine_note"]
    assert json.loads(call["function"]["arguments"])["unit"] in ("celsius", "fahrenheit")
    plain = _post(client, model="local", messages=FACTS, tools=[lookup], tool_choice="none").json()
    assert (
        "tool_calls" not in plain["choices"][0]["message"]
        and "31 years old" in plain["choices"][0]["message"]["content"]
    )
    assert "## Tools" not in plain["choices"][0]["message"]["content"]
