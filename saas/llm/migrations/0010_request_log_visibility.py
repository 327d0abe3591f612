from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("llm", "0009_pii_policy_options"),
    ]

    operations = [
        migrations.AddField(
            model_name="orgllmsettings",
            name="prompt_visibility",
            field=models.CharField(
                choices=[("admins", "Admins and owners"), ("owners", "Owners only"), ("nobody", "Nobody")],
                default="admins",
                help_text="Who may read the stored (masked) prompts and answers in the request log.",
                max_length=8,
            ),
        ),
    ]
