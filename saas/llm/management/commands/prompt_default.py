"""The operator's default prompts: list them, or add a version of one (and put it in production).

python manage.py prompt_default                       # the keys and their production version
python manage.py prompt_default ask.system --file rules.txt --note "shorter" --production
"""

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from saas.core.errors import ApplicationError
from saas.llm import prompts
from saas.llm.models import Prompt


class Command(BaseCommand):
    help = "List the operator's default prompts, or add a version of one."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("key", nargs="?")
        parser.add_argument("--file", help="The new version's text (UTF-8).")
        parser.add_argument("--note", default="")
        parser.add_argument("--production", action="store_true", help="Label the new version production.")

    def handle(self, *args: Any, key: str | None = None, file: str | None = None, note: str = "",
               production: bool = False, **options: Any) -> None:  # fmt: skip
        prompts.prompt_defaults_sync()
        if not key:
            for prompt in Prompt.all_orgs.filter(organization__isnull=True).select_related("production"):
                number = prompt.production.number if prompt.production else "-"
                self.stdout.write(f"{prompt.key}\tv{number}\t{prompt.title}")
            return
        if not file:
            raise CommandError("Give the new version's text with --file.")
        try:
            version = prompts.prompt_version_create(org=None, key=key, text=Path(file).read_text(), note=note)
            if production:
                prompts.prompt_label_set(org=None, version=version)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"{key} v{version.number}{' (production)' if production else ''}")
