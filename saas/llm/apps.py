from django.apps import AppConfig


class LLMConfig(AppConfig):
    name = "saas.llm"
    label = "llm"
    verbose_name = "LLM gateway"

    def ready(self) -> None:
        from saas.llm import config

        config.connect_signals()
