from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from saas.llm.models import ModelConfig, Provider
from saas.llm.registry import sync_providers, sync_registry


class Command(BaseCommand):
    help = (
        "Load saas/llm/registry.yaml into the providers and the model registry (new entries only, unless --overwrite)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--overwrite", action="store_true", help="reset existing aliases to the file too")

    def handle(self, *args: Any, **options: Any) -> None:
        created, updated = sync_providers(Provider, overwrite=options["overwrite"])
        self.stdout.write(f"Providers: {created} created, {updated} updated.")
        created, updated = sync_registry(ModelConfig, overwrite=options["overwrite"])
        self.stdout.write(f"Model registry: {created} created, {updated} updated.")
