from django.apps import AppConfig


class LLMConfig(AppConfig):
    name = "saas.llm"
    label = "llm"
    verbose_name = "LLM gateway"

    def ready(self) -> None:
        from saas.core.retention import register_purger
        from saas.llm import config
        from saas.llm.models import ModelConfig, OrgLLMSettings, OrgProvider, Provider
        from saas.llm.retention import ledger_content_purge, traces_purge

        config.memo.watch(ModelConfig, OrgLLMSettings, Provider, OrgProvider)
        register_purger(store="ledger_content", setting="retain_ledger_content_days", purge=ledger_content_purge)
        register_purger(store="traces", setting="retain_ledger_content_days", purge=traces_purge)

        from saas.core.privacy import register_notice, register_store
        from saas.llm import privacy

        register_store(privacy.LEDGER)
        register_store(privacy.CACHE)
        register_store(privacy.TRACES)
        register_store(privacy.PROVIDERS)
        register_notice("AI models and personal data", privacy.models_notice)

        from saas.core.health import register_informational_check
        from saas.llm import provider_registry

        register_informational_check("llm_providers", provider_registry.readiness_check)

        from django.db.models.signals import post_migrate

        from saas.llm import prompts
        from saas.llm.prompt_models import Experiment, ExperimentVariant, Prompt, PromptVersion

        prompts.memo.watch(Prompt, PromptVersion, Experiment, ExperimentVariant)
        # The operator's built-in prompts come back after a flush (transactional tests) as after a migrate.
        post_migrate.connect(_sync_prompts, sender=self, dispatch_uid="llm-prompt-defaults")


def _sync_prompts(sender: object, using: str = "default", apps: object = None, **kwargs: object) -> None:
    from saas.llm.prompts import prompt_defaults_sync

    try:
        apps.get_model("llm", "PromptVersion")  # type: ignore[attr-defined]
    except (LookupError, AttributeError):
        return  # migrated back to before prompts existed
    prompt_defaults_sync()
