from django.db import migrations
from pgvector.django import VectorExtension


class Migration(migrations.Migration):
    """pgvector is part of the schema: every database Crewdesk runs on has the `vector` extension."""

    initial = True
    dependencies: list = []
    operations = [VectorExtension()]
