"""The client libraries people point at /v1, unchanged, against a live Crewdesk (daphne): the official `openai`
SDK with its defaults, and LangChain's ChatOpenAI (invoke, stream, bind_tools, with_structured_output) and
OpenAIEmbeddings. Twice: on a server with no model provider configured (the local engine answers), and
against the fake OpenAI upstream.

OpenAIEmbeddings runs with `check_embedding_ctx_length=False`: by default it tokenizes with tiktoken, which
downloads its BPE files from the internet, and sends token ids, which Crewdesk does not take."""

import base64
import json
import struct
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import jsonschema
import openai
import pytest
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel, Field

from saas.llm.models import ModelConfig
from tests.accounts.conftest import issue_key
from tests.accounts.factories import OrganizationFactory
from tests.conftest import running_daphne

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

FACTS = (
    "[1] Ann Berg is 31 years old. She lives in Oslo and works as a nurse.\n[2] The hospital cafeteria opens at 7 am."
)
QUESTION = "Who is the nurse and how old is she?"
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str = Field(description="The person's name")
    age: int = Field(description="Age in years")
    city: str


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"Sunny in {city}"


def _models(*, local: bool) -> tuple[str, str]:
    """The chat and embedding model aliases of this run, created fresh."""
    ModelConfig.objects.all().delete()
    if local:
        ModelConfig.objects.create(alias="local", upstream="local", upstream_model="extractive-minilm", tier="small",
                                   input_price_per_mtok=Decimal(0), output_price_per_mtok=Decimal(0),
                                   context_window=32768)  # fmt: skip
        ModelConfig.objects.create(alias="local-minilm", kind="embedding", upstream="local",
                                   upstream_model="all-MiniLM-L6-v2", input_price_per_mtok=Decimal(0),
                                   output_price_per_mtok=Decimal(0), context_window=512)  # fmt: skip
        return "local", "local-minilm"
    ModelConfig.objects.create(alias="gpt-test", upstream="openai", upstream_model="fake-small", tier="small",
                               input_price_per_mtok=Decimal(1), output_price_per_mtok=Decimal(2),
                               context_window=16000, supports_tools=True, supports_json=True)  # fmt: skip
    ModelConfig.objects.create(alias="embed-test", kind="embedding", upstream="openai",
                               upstream_model="text-embedding-3-small", input_price_per_mtok=Decimal(0),
                               output_price_per_mtok=Decimal(0), context_window=8191)  # fmt: skip
    return "gpt-test", "embed-test"


@pytest.fixture(scope="module")
def offline_server(django_db_setup, tmp_path_factory):
    """A daphne with no model provider configured at all (LLM_OPENAI_BASE_URL empty)."""
    with running_daphne(tmp_path_factory.mktemp("offline"), SimpleNamespace(base_url="")) as server:
        yield server


@pytest.fixture(params=["local", "fake"])
def setup(request, db):
    """(base URL, API key, chat model, embedding model, is_local) for each way of running."""
    local = request.param == "local"
    server = request.getfixturevalue("offline_server" if local else "daphne_server")
    if not local:
        request.getfixturevalue("fake")
    chat, embedding = _models(local=local)
    key = issue_key(OrganizationFactory(), scopes=["read", "ask"])
    return SimpleNamespace(url=f"{server.url}/v1", key=key.secret, chat=chat, embedding=embedding, local=local)


def _sdk(setup):
    return openai.OpenAI(base_url=setup.url, api_key=setup.key, max_retries=0)


def _langchain(setup, **options):
    return ChatOpenAI(model=setup.chat, base_url=setup.url, api_key=setup.key, max_retries=0, **options)


MESSAGES = [{"role": "system", "content": FACTS}, {"role": "user", "content": QUESTION}]


# --- The openai SDK -----------------------------------------------------------------------------------------


def test_sdk_embeddings_with_the_default_base64(setup):
    response = _sdk(setup).embeddings.create(model=setup.embedding, input=["nurse in Oslo", "cafeteria"])
    # The SDK asked for base64 (its default) and decoded it back into floats.
    assert [len(d.embedding) for d in response.data] == [384, 384]
    assert all(isinstance(x, float) for x in response.data[0].embedding)
    raw = _sdk(setup).embeddings.create(model=setup.embedding, input="nurse", encoding_format="base64")
    packed = base64.b64decode(raw.data[0].embedding)  # type: ignore[arg-type]
    assert len(struct.unpack(f"<{len(packed) // 4}f", packed)) == 384


def test_sdk_tools_with_a_forced_tool_choice(setup):
    completion = _sdk(setup).chat.completions.create(
        model=setup.chat, messages=MESSAGES, tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )  # fmt: skip
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    # The result goes back as OpenAI's clients send it, and the model answers.
    follow = _sdk(setup).chat.completions.create(
        model=setup.chat, tools=[WEATHER],
        messages=[*MESSAGES, choice.message.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 degrees"}],
    )  # fmt: skip
    assert follow.choices[0].finish_reason == "stop" and follow.choices[0].message.content


def test_sdk_response_format_json_schema(setup):
    completion = _sdk(setup).chat.completions.parse(model=setup.chat, messages=MESSAGES, response_format=Person)
    person = completion.choices[0].message.parsed
    assert isinstance(person, Person)
    if setup.local:
        assert person.age == 31 and "Oslo" in person.city


def test_sdk_streaming_with_tools(setup):
    stream = _sdk(setup).chat.completions.create(
        model=setup.chat, messages=MESSAGES, tools=[WEATHER], tool_choice="required", stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    calls = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
    assert calls[0].function.name == "get_weather" and calls[0].id
    arguments = "".join(t.function.arguments or "" for t in calls)
    jsonschema.validate(json.loads(arguments), WEATHER["function"]["parameters"])
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


# --- LangChain ----------------------------------------------------------------------------------------------


def test_langchain_invoke_and_stream(setup):
    model = _langchain(setup)
    answer = model.invoke([("system", FACTS), ("human", QUESTION)])
    assert answer.content and answer.usage_metadata["total_tokens"] > 0
    if setup.local:
        assert "31 years old" in answer.content
    pieces = list(model.stream([("system", FACTS), ("human", QUESTION)]))
    assert "".join(str(p.content) for p in pieces) == answer.content
    assert len(pieces) > 1  # it streamed


def test_langchain_bind_tools(setup):
    model = _langchain(setup).bind_tools([get_weather], tool_choice="get_weather")
    message = model.invoke([("system", FACTS), ("human", "What is the weather where Ann lives?")])
    (call,) = message.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    assert get_weather.invoke(call["args"]).startswith("Sunny in")
    streamed = None
    for piece in model.stream([("human", "Weather in Oslo?")]):
        streamed = piece if streamed is None else streamed + piece
    assert streamed is not None and streamed.tool_calls[0]["name"] == "get_weather"


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
def test_langchain_with_structured_output(setup, method):
    model = _langchain(setup).with_structured_output(Person, method=method)
    prompt = [("system", FACTS + "\nAnswer in JSON with name, age and city."), ("human", QUESTION)]
    person = model.invoke(prompt) if method != "json_mode" else None
    if method == "json_mode":  # JSON mode: the model chooses the keys; the local engine answers {"answer": ...}
        raw = _langchain(setup).with_structured_output(method="json_mode").invoke(prompt)
        assert isinstance(raw, dict)
        return
    assert isinstance(person, Person)
    if setup.local:
        assert person.age == 31


def test_langchain_embeddings(setup):
    embeddings = OpenAIEmbeddings(model=setup.embedding, base_url=setup.url, api_key=setup.key, max_retries=0,
                                  check_embedding_ctx_length=False)  # fmt: skip
    vectors = embeddings.embed_documents(["nurse in Oslo", "cafeteria hours"])
    query = embeddings.embed_query("Where does the nurse live?")
    assert [len(v) for v in vectors] == [384, 384] and len(query) == 384
    if setup.local:  # real embeddings: the question is closer to the passage that answers it
        scores = [sum(a * b for a, b in zip(query, v, strict=True)) for v in vectors]
        assert scores[0] > scores[1]
