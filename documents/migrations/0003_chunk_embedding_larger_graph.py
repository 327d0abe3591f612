import pgvector.django.indexes
from django.conf import settings
from django.db import migrations

from documents.models import EMBEDDING_DIMENSIONS

M, EF_CONSTRUCTION = 24, 128


def build_within_memory(apps, schema_editor):
    """The rebuild below gets the memory and workers its graph needs (documents/indexing.py): a graph that
    does not fit in maintenance_work_mem is finished on disk, many times slower."""
    from documents.indexing import build_settings

    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT GREATEST(reltuples, 0)::bigint FROM pg_class WHERE oid = 'documents_chunk'::regclass")
        rows = int(cursor.fetchone()[0])
        build = build_settings(
            rows=rows, dimensions=EMBEDDING_DIMENSIONS, m=M, memory_override=settings.DOCUMENTS_INDEX_BUILD_MEMORY
        )
        for statement in build.statements():
            cursor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("documents", "0002_document_attempts")]

    operations = [
        migrations.RunPython(build_within_memory, migrations.RunPython.noop),
        migrations.RemoveIndex(model_name="chunk", name="documents_chunk_embedding"),
        migrations.AddIndex(
            model_name="chunk",
            index=pgvector.django.indexes.HnswIndex(
                ef_construction=EF_CONSTRUCTION,
                fields=["embedding"],
                m=M,
                name="documents_chunk_embedding",
                opclasses=["vector_cosine_ops"],
            ),
        ),
    ]
