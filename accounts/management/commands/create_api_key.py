from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import permissions, services
from accounts.models import Membership, Organization
from accounts.permissions import Principal
from saas.core.errors import ApplicationError


class Command(BaseCommand):
    help = "Create an API key for an org and print it, once, on stdout (and nothing else)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("org_slug")
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--scopes", nargs="+", default=["read"], metavar="SCOPE",
            help=f"space-separated, out of: {' '.join(sorted(permissions.KEY_SCOPES))} (default: read)",
        )  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        org = Organization.objects.filter(slug=options["org_slug"]).first()
        if org is None:
            raise CommandError(f"No org with slug {options['org_slug']!r}.")
        operator = Principal(organization=org, scopes=permissions.ROLE_SCOPES[Membership.Role.OWNER])
        try:
            issued = services.api_key_create(principal=operator, name=options["name"], scopes=options["scopes"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(issued.secret)
