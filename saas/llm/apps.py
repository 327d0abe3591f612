from django.apps import AppConfig


class LLMConfig(AppConfig):
    name = "saas.llm"
    label = "llm"
    verbose_name = "LLM gateway"

    def ready(self) -> None:
        from saas.llm import config
        from saas.llm.models import ModelConfig, OrgLLMSettings

        config.memo.watch(ModelConfig, OrgLLMSettings)
