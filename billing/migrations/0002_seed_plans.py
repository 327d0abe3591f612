from django.db import migrations

from billing.catalogue import sync_plans

def seed(apps, schema_editor):
    sync_plans(apps.get_model("billing", "Plan"))


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_plans_and_usage")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
