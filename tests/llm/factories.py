import factory

from saas.core import crypto
from saas.llm.models import LLMCall, OrgProvider
from tests.accounts.factories import OrgOwnedFactory


class LLMCallFactory(OrgOwnedFactory):
    class Meta:
        model = LLMCall

    feature = "ask"
    model_requested = "local"
    model_used = "local"
    upstream = "local"
    status = LLMCall.Status.OK
    user = None


class OrgProviderFactory(OrgOwnedFactory):
    class Meta:
        model = OrgProvider

    name = "Team OpenAI"
    slug = factory.Sequence(lambda n: f"team-openai-{n}")
    kind = "openai_compatible"
    base_url = "https://llm.example.net/v1"
    api_key_encrypted = factory.LazyFunction(lambda: crypto.encrypt("sk-factory-key-5678"))
    key_hint = "…5678"
    enabled_models = factory.LazyFunction(lambda: [{"id": "fake-small", "kind": "chat", "context_window": 8192}])
