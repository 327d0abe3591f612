from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    name = "analytics"

    def ready(self) -> None:
        from analytics import gate, privacy
        from saas.core.privacy import register_store
        from saas.llm import prompts

        # Making a prompt version production runs the datasets that gate it first (analytics/gate.py).
        prompts.register_promotion_check(gate.promotion_check)
        register_store(privacy.STORE)
        register_store(privacy.ROLLUPS)
