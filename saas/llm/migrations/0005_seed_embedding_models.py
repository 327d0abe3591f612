from django.db import migrations


def seed(apps, schema_editor):
    from saas.llm.registry import sync_registry

    sync_registry(apps.get_model("llm", "ModelConfig"))


class Migration(migrations.Migration):
    dependencies = [("llm", "0004_model_kind")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
