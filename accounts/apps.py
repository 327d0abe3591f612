from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and organizations"

    def ready(self) -> None:
        from accounts import receivers, schema  # noqa: F401  (sign-in audit, OpenAPI auth schemes)
        from accounts.authentication import resolve_principal
        from saas.core.api import register_principal_resolver

        register_principal_resolver(resolve_principal)

        from accounts.models import ApiKey, Organization
        from accounts.services import key_memo

        key_memo.watch(ApiKey, Organization)

        from accounts import privacy

        privacy.register()
