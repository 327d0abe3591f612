import billing.models
from django.db import migrations, models

TEAM = {
    "ask": {"org": "3000/minute", "key": "600/minute"},
    "generate": {"org": "3000/minute", "key": "600/minute"},
    "chat_completions": {"org": "6000/minute", "key": "1500/minute"},
    "embeddings": {"org": "15000/minute", "key": "3000/minute"},
    "upload": {"org": "600/minute", "key": "150/minute"},
}


def team_endpoint_rate_limits(apps, schema_editor):
    # The seeded Team plan gets its higher limits; limits an operator already set stay.
    apps.get_model("billing", "Plan").objects.filter(slug="team", endpoint_rate_limits={}).update(
        endpoint_rate_limits=TEAM
    )


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0004_plan_api_rate_limit"),
    ]

    operations = [
        migrations.AddField(
            model_name="plan",
            name="endpoint_rate_limits",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text='Rates of the endpoints with buckets of their own (ask, generate, chat_completions, '
                'embeddings, upload), per org and per key, e.g. {"ask": {"org": "3000/minute", "key": '
                '"600/minute"}}; an endpoint or rate left out takes the server\'s (ENDPOINT_RATE_LIMITS).',
                validators=[billing.models.validate_endpoint_rate_limits],
            ),
        ),
        migrations.RunPython(team_endpoint_rate_limits, migrations.RunPython.noop),
    ]
