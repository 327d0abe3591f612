"""The offline extractive engine: real embeddings (all-MiniLM-L6-v2 from the installed package), quotes with
citations, an honest "not found", and a label on everything it answers."""

import pytest

from saas.llm import gateway
from saas.llm.local_engine import NO_CONTEXT, NOTHING_FOUND, answer
from saas.llm.models import LLMCall, ModelConfig
from saas.llm.providers import ChatRequest
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import OrganizationFactory

CONTEXT = (
    "[1] The office is closed on public holidays. Staff may work remotely on Fridays.\n"
    "[2] Expense reports are due on the fifth working day of each month. Late reports are paid next cycle.\n"
    "[3] The cafeteria serves vegetarian lunches every Tuesday."
)


def _ask(question: str, context: str | None = CONTEXT) -> str:
    messages = [{"role": "system", "content": context}] if context else []
    return answer(ChatRequest(messages=[*messages, {"role": "user", "content": question}]))


def test_it_quotes_the_relevant_sentences_with_their_source_labels():
    text = _ask("When are expense reports due?")
    assert "Expense reports are due on the fifth working day of each month. [2]" in text
    assert "cafeteria" not in text


def test_it_says_so_when_nothing_is_relevant():
    assert _ask("What is the boiling point of tungsten?") == NOTHING_FOUND


def test_without_any_context_it_explains_what_it_is():
    assert _ask("Write me a poem", context=None) == NO_CONTEXT


def test_facts_and_a_question_in_one_message_are_context_and_query():
    text = answer(ChatRequest(messages=[{"role": "user", "content":
        "Our refund window is 30 days. Shipping is free above 50 euros. What is the refund window?"}]))  # fmt: skip
    assert text == "Our refund window is 30 days. [1]"


def test_it_is_deterministic():
    assert _ask("Can I work from home?") == _ask("Can I work from home?")


@pytest.fixture
def local_only(db, settings):
    settings.LLM_UPSTREAMS = {"openai": {"base_url": "", "api_key": ""}}
    gateway.reset_providers()
    ModelConfig.objects.all().delete()
    ModelConfig.objects.create(
        alias="local", upstream="local", upstream_model="extractive-minilm", context_window=32768
    )
    ModelConfig.objects.create(alias="gpt-4o", upstream="openai", upstream_model="gpt-4o", tier="large")
    yield
    gateway.reset_providers()


def test_with_no_provider_configured_auto_uses_the_local_engine_and_labels_it(local_only):
    caller = gateway.Caller(org=OrganizationFactory(), feature="crew")  # crew would prefer the large tier
    request = ChatRequest(
        messages=[{"role": "system", "content": CONTEXT}, {"role": "user", "content": "When are expense reports due?"}]
    )
    result = gateway.chat(caller=caller, model="auto", request=request)
    assert result.model == "local" and result.engine == "local-extractive" and "[2]" in result.text
    call = LLMCall.all_orgs.get()
    assert call.cost_usd == 0 and call.tokens_estimated and call.upstream == "local"
    streamed = [i for i in gateway.chat_stream(caller=caller, model="local", request=request, bypass_cache=True)]
    assert "".join(i for i in streamed if isinstance(i, str)) == result.text
    assert streamed[-1].engine == "local-extractive"


def test_the_openai_surface_labels_local_answers_and_lists_only_usable_models(local_only):
    key = issue_key(OrganizationFactory(), scopes=["read", "ask"])
    client = key_client(key.secret)
    body = client.post(
        "/v1/chat/completions", {"model": "local", "messages": [{"role": "user", "content": "hi"}]}, format="json"
    ).json()
    assert body["crewdesk"]["engine"] == "local-extractive" and body["choices"][0]["message"]["content"] == NO_CONTEXT
    models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert "gpt-4o" not in models  # its upstream is not configured here
    assert models["local"]["crewdesk"]["engine"] == "local-extractive"
    unavailable = client.post(
        "/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, format="json"
    )
    assert unavailable.status_code == 502 and "configured" in unavailable.json()["error"]["message"]


def test_embeddings_through_the_openai_surface_local_and_upstream(local_only, fake, settings):
    ModelConfig.objects.create(
        alias="local-minilm", kind="embedding", upstream="local", upstream_model="all-MiniLM-L6-v2"
    )
    key = issue_key(OrganizationFactory(), scopes=["ask"])
    client = key_client(key.secret)
    body = client.post("/v1/embeddings", {"input": ["cats purr", "dogs bark"]}, format="json").json()
    assert body["model"] == "local-minilm" and len(body["data"]) == 2
    assert len(body["data"][0]["embedding"]) == 384 and body["crewdesk"]["engine"] == "local-extractive"
    assert LLMCall.all_orgs.filter(feature="embed", status="ok").count() == 1

    settings.LLM_UPSTREAMS = {"openai": {"base_url": fake.base_url, "api_key": "k"}}
    gateway.reset_providers()
    ModelConfig.objects.create(alias="remote-embed", kind="embedding", upstream="openai", upstream_model="emb")
    remote = client.post("/v1/embeddings", {"model": "remote-embed", "input": "hello"}, format="json").json()
    assert len(remote["data"][0]["embedding"]) == 384
    assert fake.requests()[-1]["body"]["dimensions"] == 384

    for payload, needle in (
        ({"input": []}, "1 to"),
        ({"input": [1, 2]}, "token arrays"),
        ({"input": "x", "model": "local"}, "chat model"),
        ({"input": "x", "dimensions": 768}, "384"),
    ):
        response = client.post("/v1/embeddings", payload, format="json")
        assert response.status_code == 400, payload
        assert needle in response.json()["error"]["message"], response.json()
