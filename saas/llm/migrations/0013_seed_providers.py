from django.db import migrations


def seed(apps, schema_editor):
    from saas.llm.registry import sync_providers, sync_registry

    sync_providers(apps.get_model("llm", "Provider"))
    sync_registry(apps.get_model("llm", "ModelConfig"))  # the new models (claude-haiku, gemini-flash)


class Migration(migrations.Migration):
    dependencies = [("llm", "0012_providers")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
