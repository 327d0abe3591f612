"""Re-encrypt everything stored encrypted under the newest of LLM_ENCRYPTION_KEYS, in batches, while the
application keeps running. Safe to stop and run again: rows already under the newest key are skipped.

    1. put the new key first:  LLM_ENCRYPTION_KEYS=<new>,<old>   (restart the processes)
    2. manage.py rotate_encryption_keys                           (prints what it re-encrypted per column)
    3. manage.py rotate_encryption_keys --check                   (0 left everywhere: the old key can go)
    4. LLM_ENCRYPTION_KEYS=<new>

The columns are every text field named `*_encrypted` of every installed model, and the two-factor secrets in
allauth's JSON column (saas.core.crypto.JSON_SECRETS). Stored files (uploaded originals, exports) have their
data key re-wrapped, their content copied as it is; a file stored before encryption at rest is encrypted. Each
row is swapped only if it still holds the value that was read (compare and swap), so a row rewritten meanwhile is
not clobbered; a file is replaced whole (a rename on disk, one PUT on S3).
"""

from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError
from django.db import models, transaction

from saas.core import crypto, storage


def encrypted_columns() -> list[tuple[type[models.Model], str]]:
    return [
        (model, field.name)
        for model in apps.get_models()
        for field in model._meta.get_fields()
        if isinstance(field, models.TextField) and field.name.endswith("_encrypted")
    ]


def json_secrets() -> list[tuple[type[models.Model], str, tuple[str, ...]]]:
    installed = {config.label for config in apps.get_app_configs()}
    return [(apps.get_model(app, model), field, keys) for app, model, field, keys in crypto.JSON_SECRETS
            if app in installed]  # fmt: skip


class Command(BaseCommand):
    help = "Re-encrypt stored ciphertexts under the newest LLM_ENCRYPTION_KEYS key (or --check what is left)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument("--check", action="store_true", help="Only count the rows not under the newest key.")

    def handle(self, *args: Any, batch_size: int, check: bool, **options: Any) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        left_in_all = 0
        for model, column in encrypted_columns():
            rotated, current, left = self._column(model, column, batch_size, check)
            left_in_all += left
            label = f"{model._meta.label}.{column}"
            if check:
                self.stdout.write(f"{label}: {left} not under the newest key, {current} under it")
            else:
                self.stdout.write(f"{label}: {rotated} re-encrypted, {current} already under the newest key")
        for model, column, keys in json_secrets():
            rotated, current, left = self._json_column(model, column, keys, batch_size, check)
            left_in_all += left
            label = f"{model._meta.label}.{column}[{'/'.join(keys)}]"
            self.stdout.write(f"{label}: {left if check else rotated} {'left' if check else 're-encrypted'}, "
                              f"{current} already under the newest key")  # fmt: skip
        for model, field in storage.stored_file_fields():  # uploaded originals, exports (saas/core/storage.py)
            counts = storage.rotate_stored_files(model=model, field=field, check=check, batch_size=batch_size)
            label = f"{model._meta.label}.{field} (files)"
            if check:
                left_in_all += counts["rotated"]
                line = f"{label}: {counts['rotated']} not under the newest key, {counts['current']} under it"
            else:
                line = f"{label}: {counts['rotated']} re-encrypted, {counts['current']} already under the newest key"
            unread = [f"{counts[what]} {what}" for what in ("missing", "unreadable") if counts[what]]
            self.stdout.write(line + "".join(f", {part}" for part in unread))
        if check and left_in_all:
            raise CommandError(f"{left_in_all} rows are not under the newest key yet: keep the old key(s).")

    def _column(self, model: type[models.Model], column: str, batch_size: int, check: bool) -> tuple[int, int, int]:
        rows = model._base_manager.exclude(**{column: ""}).order_by("pk")
        rotated = current = left = 0
        last_pk = None
        while True:
            page = rows.filter(pk__gt=last_pk) if last_pk is not None else rows
            batch = list(page.values_list("pk", column)[:batch_size])
            if not batch:
                return rotated, current, left
            last_pk = batch[-1][0]
            stale = [(pk, token) for pk, token in batch if not crypto.is_current(token)]
            current += len(batch) - len(stale)
            if check:
                left += len(stale)
                continue
            with transaction.atomic():
                for pk, token in stale:
                    swapped = model._base_manager.filter(pk=pk, **{column: token}).update(
                        **{column: crypto.rotate(token)}
                    )
                    rotated += swapped

    def _json_column(
        self, model: type[models.Model], column: str, keys: tuple[str, ...], batch_size: int, check: bool
    ) -> tuple[int, int, int]:
        rotated = current = left = 0
        for pk, data in model._base_manager.order_by("pk").values_list("pk", column).iterator(chunk_size=batch_size):
            tokens = {key: data[key] for key in keys if isinstance(data, dict) and data.get(key)}
            stale = {key: token for key, token in tokens.items() if not crypto.is_current(token)}
            current += len(tokens) - len(stale)
            if check or not stale:
                left += len(stale)
                continue
            new = {**data, **{key: crypto.rotate(token) for key, token in stale.items()}}
            rotated += len(stale) * model._base_manager.filter(pk=pk, **{column: data}).update(**{column: new})
        return rotated, current, left
