"""Filtered vector search at scale: our HNSW query against an exact scan, side by side in one run.

Loads 100,000 chunks (384 dimensions, clustered like real embeddings) across 5 orgs x 2 collections into the
real schema (once; reruns reuse them), then for each query runs the vector part of `documents.selectors.
chunk_search` (HNSW, cosine, filtered by org and collection, pgvector 0.8 iterative scans) and the exact
answer (the same query with index scans off), after 200 untimed queries that bring the index into memory.
Prints p50/p95 latency of both and recall@10 of ours.

    python bench/retrieval.py [--chunks 100000] [--queries 200]
"""

import argparse
import statistics
import time
import uuid

import numpy as np
from stack import bench_stack

ORGS, COLLECTIONS_PER_ORG, DIMENSIONS, CLUSTERS = 5, 2, 384, 500
WARMUP = 200  # untimed queries first
QUERY = """
    SELECT id FROM documents_chunk
     WHERE organization_id = %s AND collection_id = %s
     ORDER BY embedding <=> %s LIMIT 10
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def sample(centers: np.ndarray, picks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Points around cluster centers (noise of about 0.6 of the centers' length), like topics in real text."""
    noise = rng.standard_normal((len(picks), DIMENSIONS)) * (0.6 / np.sqrt(DIMENSIONS))
    return unit(centers[picks] + noise)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()

    with bench_stack():
        run(args.chunks, args.queries)


def load(chunks: int, rng: np.random.Generator) -> tuple[list, np.ndarray]:
    from django.db import connection
    from pgvector.psycopg import register_vector

    from accounts.models import Organization
    from documents.models import Chunk, Collection, Document

    scopes = []
    for o in range(ORGS):
        org, _ = Organization.objects.get_or_create(slug=f"bench-retrieval-{o}", defaults={"name": f"Bench {o}"})
        for c in range(COLLECTIONS_PER_ORG):
            collection, _ = Collection.all_orgs.get_or_create(organization=org, name=f"Bench {c}")
            document, _ = Document.all_orgs.get_or_create(
                organization=org, collection=collection, sha256=f"bench-{o}-{c}",
                defaults={"title": "bench", "filename": "bench.txt", "kind": "text", "size_bytes": 1,
                          "file": "bench/none", "status": "ready"},
            )  # fmt: skip
            scopes.append((org.pk, collection.pk, document.pk))
    centers = unit(rng.standard_normal((CLUSTERS, DIMENSIONS)))
    org_ids = [s[0] for s in scopes]
    if Chunk.all_orgs.filter(organization_id__in=org_ids).count() == chunks:
        print(f"reusing {chunks} chunks")
        return scopes, centers
    Chunk.all_orgs.filter(organization_id__in=org_ids).delete()
    print(f"loading {chunks} chunks ...", flush=True)
    started = time.perf_counter()
    per_scope = chunks // len(scopes)
    connection.ensure_connection()
    raw = connection.connection
    register_vector(raw)
    with raw.cursor() as cursor:
        cursor.execute("DROP INDEX IF EXISTS documents_chunk_embedding")
        with cursor.copy(
            "COPY documents_chunk (id, created_at, updated_at, organization_id, document_id, collection_id, position,"
            " heading, text_encrypted, token_count, embedding, search_vector) FROM STDIN"
        ) as copy:
            now = django_now()
            for org_id, collection_id, document_id in scopes:
                picks = rng.integers(0, CLUSTERS, per_scope)
                vectors = sample(centers, picks, rng)
                for position, vector in enumerate(vectors.astype(np.float32)):
                    copy.write_row([uuid.uuid4(), now, now, org_id, document_id, collection_id, position, "", "x", 1,
                                    vector, ""])  # fmt: skip
        print(f"  copied in {time.perf_counter() - started:.0f} s; building the HNSW index ...", flush=True)
        cursor.execute("SET maintenance_work_mem = '1GB'")
        cursor.execute(
            "CREATE INDEX documents_chunk_embedding ON documents_chunk USING hnsw (embedding vector_cosine_ops)"
            " WITH (m = 16, ef_construction = 64)"
        )
        cursor.execute("ANALYZE documents_chunk")
    raw.commit()
    print(f"  loaded and indexed in {time.perf_counter() - started:.0f} s", flush=True)
    return scopes, centers


def django_now():  # type: ignore[no-untyped-def]
    from django.utils import timezone

    return timezone.now()


def run(chunks: int, queries: int) -> None:
    from django.db import connection, transaction
    from pgvector.psycopg import register_vector

    rng = np.random.default_rng(7)
    scopes, centers = load(chunks, rng)
    connection.ensure_connection()
    register_vector(connection.connection)
    # A server that just started reads the index from disk on its first queries (p95 of 12-40 ms here); a
    # serving database has it in memory. Walk it untimed first, and say so.
    for i in range(WARMUP):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            cursor.execute(QUERY, [*scopes[i % len(scopes)][:2], sample(centers, rng.integers(0, CLUSTERS, 1), rng)[0]])
    ours, exact, recalls = [], [], []
    for i in range(queries):
        org_id, collection_id, _ = scopes[i % len(scopes)]
        query = sample(centers, rng.integers(0, CLUSTERS, 1), rng)[0]
        query = query.astype(np.float32)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            cursor.execute("SET LOCAL hnsw.ef_search = 40")
            started = time.perf_counter()
            cursor.execute(QUERY, [org_id, collection_id, query])
            found = [row[0] for row in cursor.fetchall()]
            ours.append((time.perf_counter() - started) * 1000)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_indexscan = off")
            cursor.execute("SET LOCAL enable_bitmapscan = off")
            started = time.perf_counter()
            cursor.execute(QUERY, [org_id, collection_id, query])
            truth = [row[0] for row in cursor.fetchall()]
            exact.append((time.perf_counter() - started) * 1000)
        recalls.append(len(set(found) & set(truth)) / max(1, len(truth)))

    print(
        f"\nFiltered top-10 vector search, {chunks} chunks in {len(scopes)} org collections, {queries} queries (ms)\n"
    )
    print(f"{'':<34}{'p50':>8}{'p95':>8}{'recall@10':>11}")
    print(f"{'ours: HNSW + iterative scan':<34}{statistics.median(ours):>8.2f}{percentile(ours, 0.95):>8.2f}"
          f"{statistics.mean(recalls):>11.3f}")  # fmt: skip
    print(f"{'baseline: exact scan':<34}{statistics.median(exact):>8.2f}{percentile(exact, 0.95):>8.2f}{1:>11.3f}")


if __name__ == "__main__":
    main()
