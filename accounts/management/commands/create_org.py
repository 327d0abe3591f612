from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import services
from accounts.models import User
from saas.core.errors import ApplicationError


class Command(BaseCommand):
    help = (
        "Create an org with an owner. An owner address without an account gets one without a password "
        "(they set it with 'Forgot password')."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--owner", required=True, help="the owner's email address")
        parser.add_argument("--name", help="display name (default: the slug)")

    def handle(self, *args: Any, **options: Any) -> None:
        email = options["owner"].strip().lower()
        try:
            user = User.objects.filter(email__iexact=email).first() or services.user_create(email=email, password=None)
            org = services.organization_create(
                name=options["name"] or options["slug"], owner=user, slug=options["slug"]
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"Created org {org.slug} ({org.id}) owned by {user.email}")
