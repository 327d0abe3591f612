"""Where a conversation's title came from. Existing conversations are marked as renamed (whether their member
renamed them is not known): a summary is only ever written over a title taken from the first question."""

from django.db import migrations, models

CHOICES = [
    ("question", "the first question"),
    ("summary", "summarised from the first exchange"),
    ("user", "renamed by its member"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0005_conversation_collections_pins"),
    ]

    operations = [
        migrations.AddField(  # fills the existing rows
            model_name="conversation",
            name="title_source",
            field=models.CharField(choices=CHOICES, default="user", max_length=8),
        ),
        migrations.AlterField(  # new conversations start with the first question's title
            model_name="conversation",
            name="title_source",
            field=models.CharField(choices=CHOICES, default="question", max_length=8),
        ),
    ]
