from django.contrib.postgres.fields import ArrayField
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("accounts", "0007_encrypt_mfa_secrets")]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="allowed_networks",
            field=ArrayField(base_field=models.CharField(max_length=43), blank=True, default=list, size=None),
        ),
    ]
