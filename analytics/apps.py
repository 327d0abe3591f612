from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    name = "analytics"

    def ready(self) -> None:
        from analytics import privacy
        from saas.core.privacy import register_store

        register_store(privacy.ROLLUPS)
