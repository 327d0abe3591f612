from django.db import migrations


def seed(apps, schema_editor):
    from saas.llm.registry import sync_registry

    sync_registry(apps.get_model("llm", "ModelConfig"))  # adds the `local` engine; leaves edited entries alone


class Migration(migrations.Migration):
    dependencies = [("llm", "0002_seed_registry")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
