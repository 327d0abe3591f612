from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "saas.core"
    label = "core"
    verbose_name = "Crewdesk core"
