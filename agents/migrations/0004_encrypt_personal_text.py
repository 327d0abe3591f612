"""Conversation titles, chat answers' errors, feedback comments, the inputs of crews' schedules and of runs,
runs' errors and their steps' data (citations, tool and review details) are encrypted at rest
(saas.core.crypto), like the message text and run outputs next to them.

Adds a `*_encrypted` column for each, encrypts the existing rows into it in batches of BATCH (ordered by primary
key, one UPDATE per batch), then drops the clear columns. A run's frozen definition loses its `schedule` (its
inputs were a clear copy of the crew's; a run never reads it), and a run's `request_hash` becomes an HMAC (a plain
SHA-256 of the inputs would let anyone who reads the table confirm a guess of them).

Reversible: backwards, the clear columns come back and are filled by decrypting (with a key still listed in
LLM_ENCRYPTION_KEYS); the schedules dropped from runs' definitions do not come back (nothing reads them).
"""

import hashlib
import json
from typing import Any

from django.db import migrations, models
from django.utils.crypto import salted_hmac

from saas.core import crypto

BATCH = 500

# model, clear field, encrypted column, whether it holds JSON
COLUMNS = [
    ("Conversation", "title", "title_encrypted", False),
    ("Message", "error", "error_encrypted", False),
    ("Feedback", "comment", "comment_encrypted", False),
    ("Crew", "schedule_inputs", "schedule_inputs_encrypted", True),
    ("Run", "inputs", "inputs_encrypted", True),
    ("Run", "error", "error_encrypted", False),
    ("RunStep", "data", "data_encrypted", True),
]


def _batches(model: Any, fields: list[str], batch_size: int) -> Any:
    """The rows in pages of `batch_size` by primary key (a page is read whole before it is written)."""
    last = None
    while True:
        rows = model._base_manager.order_by("pk").only("pk", *fields)
        page = list((rows.filter(pk__gt=last) if last is not None else rows)[:batch_size])
        if not page:
            return
        last = page[-1].pk
        yield page


def _hash_with_key(run: Any) -> str:
    payload = json.dumps([str(run.crew_id), run.inputs], sort_keys=True, default=str)
    return salted_hmac("crewdesk.agents.run_request", payload, algorithm="sha256").hexdigest()


def _plain_hash(run: Any) -> str:
    return hashlib.sha256(json.dumps([str(run.crew_id), run.inputs], sort_keys=True, default=str).encode()).hexdigest()


def _checks_now(schema_editor: Any) -> None:
    """Foreign keys are checked at each statement, not at commit: a row updated twice in this transaction would
    otherwise leave trigger events pending, and PostgreSQL refuses to drop a column of a table that has some."""
    schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def encrypt_rows(apps: Any, schema_editor: Any, batch_size: int | None = None) -> None:
    batch_size = batch_size or BATCH
    _checks_now(schema_editor)
    for model_name, clear, column, is_json in COLUMNS:
        model = apps.get_model("agents", model_name)
        for page in _batches(model, [clear], batch_size):
            changed = [row for row in page if getattr(row, clear)]
            for row in changed:
                value = getattr(row, clear)
                setattr(row, column, crypto.encrypt_json(value) if is_json else crypto.encrypt(value))
            if changed:
                model._base_manager.bulk_update(changed, [column])
    run_model = apps.get_model("agents", "Run")
    for page in _batches(run_model, ["definition", "request_hash", "inputs", "crew_id"], batch_size):
        for run in page:
            if isinstance(run.definition, dict):
                run.definition.pop("schedule", None)
            if run.request_hash:
                run.request_hash = _hash_with_key(run)
        run_model._base_manager.bulk_update(page, ["definition", "request_hash"])


def decrypt_rows(apps: Any, schema_editor: Any, batch_size: int | None = None) -> None:
    batch_size = batch_size or BATCH
    _checks_now(schema_editor)
    for model_name, clear, column, is_json in COLUMNS:
        model = apps.get_model("agents", model_name)
        for page in _batches(model, [column], batch_size):
            changed = [row for row in page if getattr(row, column)]
            for row in changed:
                token = getattr(row, column)
                setattr(row, clear, crypto.decrypt_json(token) if is_json else crypto.decrypt(token))
            if changed:
                model._base_manager.bulk_update(changed, [clear])
    run_model = apps.get_model("agents", "Run")
    for page in _batches(run_model, ["request_hash", "inputs", "crew_id"], batch_size):
        keyed = [run for run in page if run.request_hash]
        for run in keyed:
            run.request_hash = _plain_hash(run)
        if keyed:
            run_model._base_manager.bulk_update(keyed, ["request_hash"])


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0003_crews"),
    ]

    operations = [
        migrations.AddField(model_name="conversation", name="title_encrypted", field=models.TextField(blank=True)),
        migrations.AddField(model_name="message", name="error_encrypted", field=models.TextField(blank=True)),
        migrations.AddField(model_name="feedback", name="comment_encrypted", field=models.TextField(blank=True)),
        migrations.AddField(
            model_name="crew", name="schedule_inputs_encrypted", field=models.TextField(blank=True)
        ),
        migrations.AddField(model_name="run", name="inputs_encrypted", field=models.TextField(blank=True)),
        migrations.AddField(model_name="run", name="error_encrypted", field=models.TextField(blank=True)),
        migrations.AddField(model_name="runstep", name="data_encrypted", field=models.TextField(blank=True)),
        migrations.RunPython(encrypt_rows, decrypt_rows, elidable=False),
        migrations.RemoveField(model_name="conversation", name="title"),
        migrations.RemoveField(model_name="message", name="error"),
        migrations.RemoveField(model_name="feedback", name="comment"),
        migrations.RemoveField(model_name="crew", name="schedule_inputs"),
        migrations.RemoveField(model_name="run", name="inputs"),
        migrations.RemoveField(model_name="run", name="error"),
        migrations.RemoveField(model_name="runstep", name="data"),
    ]
