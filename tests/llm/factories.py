import factory

from saas.core import crypto
from saas.llm.models import Experiment, ExperimentVariant, LLMCall, OrgProvider, Prompt, PromptVersion
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


class PromptFactory(OrgOwnedFactory):
    """An org's own prompt (an override of a built-in key)."""

    class Meta:
        model = Prompt
        django_get_or_create = ("organization", "key")

    key = "ask.system"
    title = "Ask"


class PromptVersionFactory(OrgOwnedFactory):
    class Meta:
        model = PromptVersion

    prompt = factory.LazyAttribute(lambda o: PromptFactory(organization=o.organization))
    number = factory.Sequence(lambda n: n + 1)
    text = "Answer from the sources; cite them [1]."


class ExperimentFactory(OrgOwnedFactory):
    """An ended experiment of an org on ask.system, between the default and one version of the org's (tests of
    running ones start them with prompt_experiments.experiment_start: one may run per key)."""

    class Meta:
        model = Experiment
        skip_postgeneration_save = True

    key = "ask.system"
    name = "Shorter rules"
    status = Experiment.Status.ENDED

    @factory.post_generation
    def variants(self, create, extracted, **kwargs):
        if not create:
            return
        mine = PromptVersionFactory(organization=self.organization)
        default = Prompt.all_orgs.get(organization__isnull=True, key="ask.system").production
        for position, version in enumerate([default, mine]):
            ExperimentVariant.all_orgs.create(organization=self.organization, experiment=self, position=position,
                                              name="AB"[position], version=version, weight=50)  # fmt: skip
