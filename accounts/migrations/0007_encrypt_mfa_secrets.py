"""Two-factor secrets stored before accounts.adapter.MFAAdapter encrypted them are encrypted now (and decrypted
again on the way back). A value that is already a token of ours is left as it is, so the migration can run
twice."""

from django.db import migrations

KEYS = ("secret", "seed")


def _convert(apps, schema_editor, forward: bool) -> None:
    from saas.core import crypto

    Authenticator = apps.get_model("mfa", "Authenticator")
    for authenticator in Authenticator.objects.all().iterator():
        data = dict(authenticator.data or {})
        changed = False
        for key in KEYS:
            value = data.get(key)
            if not value:
                continue
            encrypted = crypto.is_encrypted(value)
            if forward and not encrypted:
                data[key], changed = crypto.encrypt(value), True
            elif not forward and encrypted:
                data[key], changed = crypto.decrypt(value), True
        if changed:
            Authenticator.objects.filter(pk=authenticator.pk).update(data=data)


def encrypt(apps, schema_editor) -> None:
    _convert(apps, schema_editor, forward=True)


def decrypt(apps, schema_editor) -> None:
    _convert(apps, schema_editor, forward=False)


class Migration(migrations.Migration):
    dependencies = [("accounts", "0006_privacy"), ("mfa", "0003_authenticator_type_uniq")]
    operations = [migrations.RunPython(encrypt, decrypt)]
