from typing import Any

from django.core.management.base import BaseCommand

from accounts.services import demo_bootstrap


class Command(BaseCommand):
    help = "Create the demo user and org (idempotent). Prints the password only when the user is created."

    def handle(self, *args: Any, **options: Any) -> None:
        login = demo_bootstrap()
        if login.password:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Demo login (shown once): {login.email} / {login.password}  (org: {login.org_slug})"
                )
            )
        else:
            self.stdout.write(
                f"Demo login: {login.email} (password was shown when it was created; "
                f"reset it with `python manage.py changepassword {login.email}`)"
            )
