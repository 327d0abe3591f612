"""Each provider kind through the gateway, against a local server that speaks its real protocol: the
OpenAI shape (OpenAI-compatible, Azure OpenAI), Anthropic's Messages API (tool use, SSE events) and Gemini's
generateContent; fallbacks that cross providers on 429/5xx, and a circuit breaker per provider."""

import json
from decimal import Decimal
from typing import Any

import pytest

from saas.llm import breaker, gateway, provider_registry
from saas.llm.models import LLMCall, ModelConfig, Provider
from saas.llm.providers import ChatRequest, CircuitOpen, StreamEnd, UpstreamUnavailable
from saas.llm.providers.base import Upstream

KEY = "sk-provider-secret-0042"
ECHO = ChatRequest(messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "echo: hi there"}])
TOOLS: list[dict[str, Any]] = [{"type": "function", "function": {"name": "calculator", "description": "Arithmetic",
          "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}}}}]  # fmt: skip


def _provider(name: str, kind: str, base_url: str, key: str = KEY, **fields) -> Provider:
    row = Provider(name=name, kind=kind, base_url=base_url, **fields)
    row.set_key(key)
    row.save()
    return row


def _model(alias: str, upstream: str, upstream_model: str, **fields) -> ModelConfig:
    defaults = {"context_window": 100_000, "supports_tools": True, "input_price_per_mtok": Decimal("1"),
                "output_price_per_mtok": Decimal("2")}  # fmt: skip
    return ModelConfig.objects.create(alias=alias, upstream=upstream, upstream_model=upstream_model,
                                      **{**defaults, **fields})  # fmt: skip


@pytest.fixture
def kinds(db, fake, fake_anthropic, fake_gemini):
    ModelConfig.objects.all().delete()
    Provider.objects.all().delete()
    _provider("compat", "openai_compatible", fake.base_url)
    _provider("azure", "azure_openai", fake.root, api_version="2024-10-21")
    _provider("anth", "anthropic", fake_anthropic.base_url)
    _provider("gem", "gemini", fake_gemini.base_url)
    _model("compat-small", "compat", "fake-small", fallbacks=["claude", "local"])
    _model("azure-small", "azure", "my-deployment")
    _model("claude", "anth", "claude-haiku-4-5", fallbacks=["flash"])
    _model("flash", "gem", "gemini-2.5-flash")
    _model("local", "local", "extractive-minilm", supports_tools=False, tier="small")
    return {"compat": fake, "anth": fake_anthropic, "gem": fake_gemini}


def _stream(model: str, caller, request=ECHO):
    items = list(gateway.chat_stream(caller=caller, model=model, request=request, bypass_cache=True))
    return "".join(i for i in items if isinstance(i, str)), items[-1]


@pytest.mark.parametrize("alias", ["compat-small", "azure-small", "claude", "flash"])
def test_each_kind_answers_and_streams_through_its_own_protocol(kinds, caller, alias):
    result = gateway.chat(caller=caller, model=alias, request=ECHO, bypass_cache=True)
    assert result.text == "hi there" and result.model == alias
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens == 2 and not result.usage.estimated
    text, end = _stream(alias, caller)
    assert text == "hi there" and end.finish_reason == "stop" and end.usage.completion_tokens == 2
    calls = LLMCall.all_orgs.filter(model_used=alias)
    assert calls.count() == 2 and {c.upstream for c in calls} == {ModelConfig.objects.get(alias=alias).upstream}
    assert all(c.cost_usd > 0 for c in calls)


def test_anthropic_gets_its_messages_shape_and_key(kinds, caller):
    gateway.chat(caller=caller, model="claude", request=ECHO, bypass_cache=True)
    (received,) = kinds["anth"].requests()
    assert received["path"] == "/v1/messages"
    headers = received["headers"]
    assert headers.get("x-api-key") == KEY or headers.get("authorization") == f"Bearer {KEY}"
    assert headers["anthropic-version"]
    body = received["body"]
    assert body["system"] == "Be brief." and body["max_tokens"] == 4096
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "echo: hi there"}]}]


def test_anthropic_tool_use_comes_back_as_openai_tool_calls_plain_and_streamed(kinds, caller):
    call = {"name": "calculator", "arguments": {"expression": "6*7"}}
    kinds["anth"].script("claude-haiku-4-5", {"tool_calls": [call]}, {"tool_calls": [call]})
    request = ChatRequest(messages=[{"role": "user", "content": "What is 6*7?"}], tools=TOOLS)
    result = gateway.chat(caller=caller, model="claude", request=request)
    assert result.finish_reason == "tool_calls"
    assert [(c.name, json.loads(c.arguments)) for c in result.tool_calls] == [("calculator", {"expression": "6*7"})]
    _, end = _stream("claude", caller, request)
    assert end.finish_reason == "tool_calls"
    assert [(c.name, json.loads(c.arguments)) for c in end.tool_calls] == [("calculator", {"expression": "6*7"})]
    sent = kinds["anth"].requests()[0]["body"]
    assert sent["tools"] == [{"name": "calculator", "description": "Arithmetic",
                              "input_schema": TOOLS[0]["function"]["parameters"]}]  # fmt: skip
    # The conversation continues with the tool's result, as Anthropic wants it: a tool_result block.
    follow = ChatRequest(tools=TOOLS, messages=[
        {"role": "user", "content": "What is 6*7?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": result.tool_calls[0].id, "type": "function",
         "function": {"name": "calculator", "arguments": result.tool_calls[0].arguments}}]},
        {"role": "tool", "tool_call_id": result.tool_calls[0].id, "content": "42"},
    ])  # fmt: skip
    gateway.chat(caller=caller, model="claude", request=follow)
    last = kinds["anth"].requests()[-1]["body"]["messages"]
    assert last[1]["content"][0]["type"] == "tool_use" and last[1]["content"][0]["input"] == {"expression": "6*7"}
    assert last[2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": result.tool_calls[0].id, "content": "42"}]}  # fmt: skip


def test_anthropic_sse_events_arrive_in_protocol_order(kinds):
    """The fake sends Anthropic's event sequence; the provider reads it into deltas and one end."""
    from saas.llm.providers.anthropic import AnthropicProvider

    provider = AnthropicProvider(Upstream("anth", kinds["anth"].base_url, KEY, kind="anthropic"))
    items = list(provider.stream("claude-haiku-4-5", ECHO, timeout=5))
    assert items[:-1] == ["hi", " there"] and isinstance(items[-1], StreamEnd)
    kinds["anth"].script("claude-haiku-4-5", {"disconnect_after": 1})
    with pytest.raises(UpstreamUnavailable):
        list(provider.stream("claude-haiku-4-5", ECHO, timeout=5))


def test_gemini_gets_generate_content_with_function_declarations_and_returns_function_calls(kinds, caller):
    kinds["gem"].script(
        "gemini-2.5-flash", {"tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}]}
    )
    request = ChatRequest(messages=[{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "1+1?"}], tools=TOOLS)  # fmt: skip
    result = gateway.chat(caller=caller, model="flash", request=request)
    assert result.finish_reason == "tool_calls"
    assert [(c.name, json.loads(c.arguments)) for c in result.tool_calls] == [("calculator", {"expression": "1+1"})]
    (received,) = kinds["gem"].requests()
    assert received["path"].endswith("/models/gemini-2.5-flash:generateContent")
    assert received["headers"]["x-goog-api-key"] == KEY
    body = received["body"]
    assert body["contents"] == [{"role": "user", "parts": [{"text": "1+1?"}]}]
    assert body["systemInstruction"]["parts"] == [{"text": "Be brief."}]
    assert body["tools"][0]["functionDeclarations"][0]["name"] == "calculator"
    _stream("flash", caller)
    assert kinds["gem"].requests()[-1]["path"].endswith(":streamGenerateContent?alt=sse")


def test_azure_openai_calls_the_deployment_with_its_api_version_and_key_header(kinds, caller):
    gateway.chat(caller=caller, model="azure-small", request=ECHO, bypass_cache=True)
    received = kinds["compat"].requests()[-1]
    assert received["path"] == "/v1/chat/completions" and received["body"]["model"] == "my-deployment"
    assert received["auth"] == KEY  # Azure's `api-key` header, not a bearer token


@pytest.mark.parametrize("status", [429, 500])
def test_a_failing_provider_falls_back_across_providers(kinds, caller, settings, status):
    settings.LLM_ROUTER = {**settings.LLM_ROUTER, "max_retries": 0}
    kinds["compat"].script("fake-small", {"status": status})
    result = gateway.chat(caller=caller, model="compat-small", request=ECHO, bypass_cache=True)
    assert result.model == "claude" and result.text == "hi there"
    call = LLMCall.all_orgs.get()
    assert [(a["upstream"], a["status"]) for a in call.attempts] == [("compat", "error"), ("anth", "ok")]
    assert call.upstream == "anth" and call.fallbacks_taken == 1


def test_the_chain_goes_on_to_gemini_and_to_local_when_the_others_fail(kinds, caller, settings):
    settings.LLM_ROUTER = {**settings.LLM_ROUTER, "max_retries": 0}
    ModelConfig.objects.filter(alias="compat-small").update(fallbacks=["claude", "flash", "local"])
    kinds["compat"].script("fake-small", {"status": 503})
    kinds["anth"].script("claude-haiku-4-5", {"status": 529})
    result = gateway.chat(caller=caller, model="compat-small", request=ECHO, bypass_cache=True)
    assert result.model == "flash"
    kinds["compat"].script("fake-small", {"status": 503})
    kinds["anth"].script("claude-haiku-4-5", {"status": 429, "retry_after": 0})
    kinds["gem"].script("gemini-2.5-flash", {"status": 500})
    ModelConfig.objects.filter(alias="compat-small").update(fallbacks=["claude", "local"])
    result = gateway.chat(caller=caller, model="compat-small", request=ECHO, bypass_cache=True)
    assert result.model == "local" and result.engine == "local-extractive"


def test_each_provider_has_its_own_circuit(kinds, caller, settings):
    settings.LLM_ROUTER = {**settings.LLM_ROUTER, "max_retries": 0}
    settings.LLM_BREAKER = {**settings.LLM_BREAKER, "failure_threshold": 2, "window": 60, "cooldown": 60}
    ModelConfig.objects.filter(alias="claude").update(fallbacks=[])
    kinds["anth"].script("claude-haiku-4-5", {"status": 500}, {"status": 500})
    for _ in range(2):
        with pytest.raises(UpstreamUnavailable):
            gateway.chat(caller=caller, model="claude", request=ECHO, bypass_cache=True)
    assert breaker.state("anth") == "open"
    assert breaker.state("compat") == breaker.state("gem") == "closed"
    with pytest.raises(CircuitOpen):
        gateway.chat(caller=caller, model="claude", request=ECHO, bypass_cache=True)
    assert len(kinds["anth"].requests()) == 2  # the open circuit kept the third call from the provider
    assert gateway.chat(caller=caller, model="flash", request=ECHO, bypass_cache=True).text == "hi there"
    health = provider_registry.provider_health()
    assert health["anth"] == {"kind": "anthropic", "configured": True, "circuit": "open"}
    assert health["gem"]["circuit"] == "closed"


def test_a_provider_without_a_key_is_not_configured_and_its_models_are_not_offered(kinds, caller):
    _provider("nokey", "anthropic", kinds["anth"].base_url, key="")
    _model("claude-nokey", "nokey", "claude-haiku-4-5")
    reachable = {m.alias for m in provider_registry.reachable_models(caller.org)}
    assert "claude-nokey" not in reachable and {"claude", "flash", "compat-small", "local"} <= reachable
    with pytest.raises(UpstreamUnavailable):
        gateway.check_chat_model(org=caller.org, alias="claude-nokey")


def test_an_operator_key_may_come_from_the_environment(kinds, caller, monkeypatch):
    _provider("envkey", "anthropic", kinds["anth"].base_url, key="", api_key_env="TEST_ANTHROPIC_KEY")
    _model("claude-env", "envkey", "claude-haiku-4-5")
    assert not gateway.available(ModelConfig.objects.get(alias="claude-env"))
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "sk-from-env-1234")
    assert gateway.chat(caller=caller, model="claude-env", request=ECHO, bypass_cache=True).text == "hi there"
    assert "sk-from-env-1234" in json.dumps(kinds["anth"].requests()[-1]["headers"])


def test_readyz_reports_provider_health_without_failing(kinds, client, settings):
    breaker.record_failure("anth")
    settings.LLM_BREAKER = {**settings.LLM_BREAKER, "failure_threshold": 1}
    breaker.record_failure("anth")
    body = client.get("/readyz").json()
    providers = body["components"]["llm_providers"]
    assert providers["required"] is False and providers["ok"] is False and "anth" in providers["detail"]
    assert providers["providers"]["anth"]["circuit"] == "open"
    assert "llm_providers" not in body.get("failing", [])


def test_gemini_embeddings_go_through_batch_embed_contents(kinds, caller):
    _model("gem-embed", "gem", "gemini-embedding-001", kind=ModelConfig.Kind.EMBEDDING)
    result = gateway.embed(caller=caller, model="gem-embed", texts=["one", "two"], dimensions=8)
    assert [len(v) for v in result.vectors] == [8, 8] and result.vectors[0] != result.vectors[1]
    received = kinds["gem"].requests()[-1]
    assert received["path"].endswith("/models/gemini-embedding-001:batchEmbedContents")
    assert [r["outputDimensionality"] for r in received["body"]["requests"]] == [8, 8]


def test_anthropic_offers_no_embeddings_and_says_so(kinds, caller):
    _model("claude-embed", "anth", "claude-haiku-4-5", kind=ModelConfig.Kind.EMBEDDING)
    with pytest.raises(gateway.BadRequest, match="no embedding models"):
        gateway.embed(caller=caller, model="claude-embed", texts=["one"])
