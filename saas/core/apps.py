from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "saas.core"
    label = "core"
    verbose_name = "Crewdesk core"

    def ready(self) -> None:
        from saas.core import checks  # noqa: F401  (registers the checks)
