"""Filtered vector search at scale: our query against an exact scan, side by side and interleaved in one run.

Loads N chunks (384 dimensions) into the real schema of a database kept in its own data directory
(.devdata/bench-retrieval-N unless --data-dir says otherwise), builds the HNSW index with settings derived
from this machine (`documents.indexing`), and keeps both: a second run with the same N skips the load and the
build. The chunks belong to 5 orgs and 15 collections of three sizes: one holds 50% of all chunks, four hold
10% each, ten hold 1% each; each query is filtered to one of them (its org and collection). Collections past
DOCUMENTS_COLLECTION_INDEX_ROWS (and under DOCUMENTS_COLLECTION_INDEX_MAX_SHARE of all chunks) get their own
HNSW graph through the product's sync (`documents.indexing.collection_indexes_sync`), also kept for reruns.

Vectors: a Gaussian mixture shaped like sentence embeddings, not uniform noise (which makes HNSW look worse
than it does on real text): a shared direction (embeddings are anisotropic), 2,000 topics of Zipf-like
popularity, 16 subtopics each, and per topic a 16-dimensional subspace in which its passages vary, plus a
little isotropic noise. Cosine similarity: about 0.8 within a subtopic, 0.5 within a topic and 0.1 between
topics. Every collection draws from the same topics, so the filter has nothing to do with where a vector lies:
the hardest case for a filtered index search.

For each selectivity: the p50/p95 latency of one client and the recall@10 of `documents.selectors.
chunk_nearest` (the vector half of hybrid search, with the plan the product picks), against the exact answer
(the same filter read through the (org, collection) btree, ordered by an expression the HNSW index cannot
serve, its plan checked), alternating which goes first; then queries per second at 8 clients, both sides in
alternating windows. CPU per query, which holds on a shared machine where wall-clock figures do not: the
PostgreSQL backend's (from /proc, at 1 and at 8 clients) and the client's (Django, this thread's clock).

    python bench/retrieval.py [--chunks 100000] [--queries 100] [--clients 8] [--seconds 5] [--data-dir DIR]
"""

import argparse
import os
import statistics
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import psutil
from stack import BASE_DIR, bench_stack

if TYPE_CHECKING:  # Django is set up in main(), by bench_stack
    from documents.models import Collection

DIMENSIONS, TOPICS, SUBTOPICS, SUBSPACE = 384, 2000, 16, 16
LAYOUT = [0.5] + [0.1] * 4 + [0.01] * 10  # each collection's share of all chunks
ORG_OF = [0, 1, 2, 3, 4, 1, 1, 2, 2, 3, 3, 3, 4, 4, 4]  # the org each collection belongs to
DOCUMENT_CHUNKS = 100  # chunks arrive a document at a time, the documents of all orgs interleaved
MARKER = "bench-retrieval v2 (m 24, ef_construction 128)"  # on the table: what it holds, for reruns
WARMUP = 200
# The baseline reads its scope through the (org, collection) btree even where half the table matches (the
# planner would scan the whole table there); index and bitmap scans stay on, and its ORDER BY (distance + 0)
# is one the HNSW index cannot serve. `check_plans` proves both before anything is timed.
BASELINE = "SET LOCAL enable_seqscan = off"
SCOPE_INDEXES = ("documents_chunk_scope", "documents_chunk_collection_id", "documents_chunk_organization_id")


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


class Corpus:
    """The Gaussian mixture described above; `sample` draws passages (or questions: the same distribution)."""

    def __init__(self, rng: np.random.Generator) -> None:
        scale = 1 / np.sqrt(DIMENSIONS)
        self.common = unit(rng.standard_normal((1, DIMENSIONS)))[0] * 0.35
        self.topics = unit(rng.standard_normal((TOPICS, DIMENSIONS))).astype(np.float32)
        self.subtopics = (rng.standard_normal((TOPICS, SUBTOPICS, DIMENSIONS)) * scale * 0.75).astype(np.float32)
        self.basis = (rng.standard_normal((TOPICS, SUBSPACE, DIMENSIONS)) * scale).astype(np.float32)
        popularity = 1 / np.arange(1, TOPICS + 1) ** 0.6
        self.popularity = popularity / popularity.sum()

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        topic = rng.choice(TOPICS, n, p=self.popularity)
        sub = rng.integers(0, SUBTOPICS, n)
        weights = rng.standard_normal((n, SUBSPACE)).astype(np.float32) * (0.55 / np.sqrt(SUBSPACE))
        local = np.einsum("nk,nkd->nd", weights, self.basis[topic])
        noise = rng.standard_normal((n, DIMENSIONS)).astype(np.float32) * (0.25 / np.sqrt(DIMENSIONS))
        return unit(self.common + self.topics[topic] + self.subtopics[topic, sub] + local + noise).astype(np.float32)


@dataclass(frozen=True)
class Scope:
    org_id: uuid.UUID
    collection: "Collection"
    share: float


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100, help="per selectivity")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5, help="per throughput window (two per side)")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    root = (args.data_dir or BASE_DIR / ".devdata" / f"bench-retrieval-{args.chunks}").resolve()

    memory = psutil.virtual_memory()
    # A serving database keeps its hot index in shared memory: a quarter of the machine, as PostgreSQL's own
    # tuning guides say, or the data set's estimated size if that is less.
    data_bytes = args.chunks * (4 * DIMENSIONS + 700) * 2  # table and index
    shared_buffers = max(128, min(memory.total // 4, data_bytes) // 2**20)
    server = {"shared_buffers": f"{shared_buffers}MB", "effective_cache_size": f"{memory.total // 2**20 // 2}MB"}
    print(f"data directory {root}; shared_buffers {shared_buffers} MB", flush=True)
    # DEBUG off, as in production: Django's debug cursor would add its query log to every search's client CPU.
    with bench_stack(root=root, postgres=server, DEBUG="false"):
        run(args)


def load(chunks: int, corpus: Corpus, rng: np.random.Generator) -> list[Scope]:
    from django.conf import settings
    from django.db import connection
    from pgvector.psycopg import register_vector

    from accounts.models import Organization
    from documents.indexing import COLLECTION_INDEX_PREFIX, build_settings
    from documents.models import Chunk, Collection, Document

    scopes = []
    counts = [round(share * chunks) for share in LAYOUT]
    for index, (share, org_index) in enumerate(zip(LAYOUT, ORG_OF, strict=True)):
        org, _ = Organization.objects.get_or_create(
            slug=f"bench-retrieval-{org_index}", defaults={"name": f"Bench {org_index}"}
        )
        collection, _ = Collection.all_orgs.get_or_create(organization=org, name=f"Bench {index} ({share:.0%})")
        scopes.append(Scope(org.pk, collection, share))

    marker = f"{MARKER} chunks={chunks}"
    with connection.cursor() as cursor:
        cursor.execute("SELECT obj_description('documents_chunk'::regclass, 'pg_class')")
        if cursor.fetchone()[0] == marker:
            print(f"reusing {chunks} chunks and their index", flush=True)
            return scopes

    print(f"loading {chunks} chunks ...", flush=True)
    started = time.perf_counter()
    connection.ensure_connection()
    raw = connection.connection
    register_vector(raw)
    with raw.cursor() as cursor:
        cursor.execute("DROP INDEX IF EXISTS documents_chunk_embedding")
        cursor.execute(  # the collections' own graphs too: they are built again after the load
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = 'documents_chunk'::regclass AND starts_with(c.relname::text, %s)",
            [COLLECTION_INDEX_PREFIX],
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f'DROP INDEX "{name}"')
        cursor.execute("TRUNCATE documents_chunk")
        cursor.execute("COMMENT ON TABLE documents_chunk IS NULL")
        # The full-text column is not what this measures: empty, and defaulted for the load only.
        cursor.execute("ALTER TABLE documents_chunk ALTER COLUMN search_vector SET DEFAULT ''")
        # A document of DOCUMENT_CHUNKS chunks at a time, the documents of every collection interleaved.
        blocks = [(i, n) for i, count in enumerate(counts) for n in _split(count, DOCUMENT_CHUNKS)]
        rng.shuffle(blocks)
        Document.all_orgs.filter(organization_id__in={s.org_id for s in scopes}).delete()
        documents = Document.all_orgs.bulk_create(
            Document(organization_id=scopes[i].org_id, collection=scopes[i].collection, sha256=f"bench-{b}",
                     title=f"bench {b}", filename="bench.txt", kind="text", size_bytes=1, file="bench/none",
                     status="ready", chunk_count=n)
            for b, (i, n) in enumerate(blocks)
        )  # fmt: skip
        columns = ("id, created_at, updated_at, organization_id, document_id, collection_id, position, heading,"
                   " text_encrypted, token_count, embedding")  # fmt: skip
        with cursor.copy(f"COPY documents_chunk ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["uuid", "timestamptz", "timestamptz", "uuid", "uuid", "uuid", "int4", "varchar", "text",
                            "int4", "vector"])  # fmt: skip
            now = django_now()
            for (i, n), document in zip(blocks, documents, strict=True):
                scope = scopes[i]
                for position, vector in enumerate(corpus.sample(n, rng)):
                    copy.write_row([uuid.uuid4(), now, now, scope.org_id, document.pk, scope.collection.pk, position,
                                    "", "x", 1, vector])  # fmt: skip
        cursor.execute("ALTER TABLE documents_chunk ALTER COLUMN search_vector DROP DEFAULT")
        raw.commit()
        print(f"  copied in {time.perf_counter() - started:.0f} s", flush=True)
        index = next(i for i in Chunk._meta.indexes if i.name == "documents_chunk_embedding")
        build = build_settings(
            rows=chunks, dimensions=DIMENSIONS, m=index.m, memory_override=settings.DOCUMENTS_INDEX_BUILD_MEMORY
        )
        print(f"  building the HNSW index: graph about {build.graph_bytes / 2**20:.0f} MB, "
              f"maintenance_work_mem {build.maintenance_work_mem_mb} MB, "
              f"{build.max_parallel_maintenance_workers} parallel workers", flush=True)  # fmt: skip
        building = time.perf_counter()
        for statement in build.statements():
            cursor.execute(statement)
        cursor.execute(index.create_sql(Chunk, connection.schema_editor()).__str__())
        cursor.execute("VACUUM (ANALYZE) documents_chunk, documents_document")  # Django's connection autocommits
        cursor.execute(f"COMMENT ON TABLE documents_chunk IS '{marker}'")
        raw.commit()
        print(f"  index built in {time.perf_counter() - building:.0f} s", flush=True)
    return scopes


def _split(total: int, size: int) -> list[int]:
    return [size] * (total // size) + ([total % size] if total % size else [])


def django_now():  # type: ignore[no-untyped-def]
    from django.utils import timezone

    return timezone.now()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(args: argparse.Namespace) -> None:
    from django.db import connection, transaction

    from documents.selectors import VectorPlan, chunk_nearest, vector_plan

    rng = np.random.default_rng(7)
    corpus = Corpus(rng)
    scopes = load(args.chunks, corpus, rng)
    with connection.cursor() as cursor:
        cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        cursor.execute(
            "SELECT pg_prewarm(c.relname::regclass) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = 'documents_chunk'::regclass AND (c.relname = 'documents_chunk_scope'"
            " OR starts_with(c.relname::text, 'documents_chunk_emb'))"
        )  # the shared HNSW index, the collections' own ones, and the scope btree

    def ours(scope: Scope, vector: np.ndarray) -> list:
        return chunk_nearest(org=scope.org_id, collection=scope.collection, vector=vector, limit=10)

    def exact(scope: Scope, vector: np.ndarray) -> list:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(BASELINE)
            plan = VectorPlan(exact=True)
            return chunk_nearest(org=scope.org_id, collection=scope.collection, vector=vector, limit=10, plan=plan)

    own_indexes(scopes)
    classes = {share: [s for s in scopes if s.share == share] for share in sorted(set(LAYOUT))}
    check_plans(classes, corpus.sample(1, rng)[0])
    # A server that has just started reads the index from disk on its first queries; one that serves has it in
    # memory. Walk it untimed first.
    for i in range(WARMUP):
        scope = scopes[i % len(scopes)]
        ours(scope, corpus.sample(1, rng)[0])

    rows = []
    for share, members in classes.items():
        plan = vector_plan(org=members[0].org_id, collection=members[0].collection, limit=10)
        timings: dict[str, list[float]] = {"ours": [], "exact": []}
        cpu = {"ours": [0.0, 0.0], "exact": [0.0, 0.0]}  # server (the backend's), client (this thread's) seconds
        backend = backend_process()
        recalls = []
        for i in range(args.queries):
            scope, vector = members[i % len(members)], corpus.sample(1, rng)[0]
            results = {}
            for side in ("ours", "exact") if i % 2 == 0 else ("exact", "ours"):
                server, client = cpu_seconds(backend), time.thread_time()
                started = time.perf_counter()
                results[side] = [pk for pk, _ in (ours if side == "ours" else exact)(scope, vector)]
                timings[side].append((time.perf_counter() - started) * 1000)
                cpu[side][0] += cpu_seconds(backend) - server
                cpu[side][1] += time.thread_time() - client
            recalls.append(len(set(results["ours"]) & set(results["exact"])) / max(1, len(results["exact"])))
        per_query = {side: [1000 * x / args.queries for x in pair] for side, pair in cpu.items()}
        qps, loaded_cpu = throughput({"ours": ours, "exact": exact}, members, corpus, args.clients, args.seconds)
        rows.append((share, plan, timings, statistics.mean(recalls), qps, per_query, loaded_cpu))
        print(f"  {share:.0%} done", flush=True)

    print(f"\nFiltered top-10 vector search: {args.chunks:,} chunks in {len(scopes)} collections of 5 orgs, "
          f"{args.queries} queries per selectivity, {args.clients} clients for throughput\n")  # fmt: skip
    print(f"{'selectivity':<13}{'side':<44}{'p50 ms':>8}{'p95 ms':>8}{'QPS':>8}{'recall@10':>11}"
          f"{'server CPU ms/q':>17}{'client CPU ms/q':>17}")  # fmt: skip
    for share, plan, timings, recall, qps, per_query, loaded_cpu in rows:
        for side, label, r in (("ours", f"ours: {plan.describe()}", recall),
                               ("exact", "baseline: exact scan via btree", 1.0)):  # fmt: skip
            t = timings[side]
            server_cpu = f"{per_query[side][0]:.2f} / {loaded_cpu[side]:.2f}"
            print(f"{share:<13.0%}{label:<44}{statistics.median(t):>8.2f}{percentile(t, 0.95):>8.2f}"
                  f"{qps[side]:>8.0f}{r:>11.3f}{server_cpu:>17}{per_query[side][1]:>17.2f}")  # fmt: skip
    print(
        f"\nserver CPU: the PostgreSQL backend's CPU per query at 1 / {args.clients} clients (/proc; 10 ms ticks,"
        " averaged); client CPU: Django's, at 1 client"
    )
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} cores")


def check_plans(classes: dict[float, list[Scope]], vector: np.ndarray) -> None:
    """The baseline must read its scope through the (org, collection) btree and never touch the HNSW index:
    EXPLAIN of the very statement the search sends (`documents.selectors.nearest_statements`)."""
    from django.db import connection, transaction

    from documents.selectors import VectorPlan, nearest_statements

    for share, members in classes.items():
        scope = members[0]
        ((query, params),) = nearest_statements(
            org=scope.org_id, collection=scope.collection, vector=vector, limit=10, plan=VectorPlan(exact=True)
        )
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(BASELINE)
            cursor.execute(f"EXPLAIN {query}", params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
        if "documents_chunk_emb" in plan or not any(name in plan for name in SCOPE_INDEXES):
            raise SystemExit(f"the exact baseline's plan at {share:.0%} does not read the scope by a btree:\n{plan}")
        used = [name for name in SCOPE_INDEXES if name in plan]
        print(f"  baseline at {share:.0%}: exact, through {', '.join(used)}", flush=True)


def throughput(
    sides: dict, members: list[Scope], corpus: Corpus, clients: int, seconds: float
) -> tuple[dict[str, float], dict[str, float]]:
    """Queries per second of each side at `clients` concurrent clients (own connections), in alternating
    windows: ours, exact, ours, exact; and the server's CPU milliseconds per query."""
    from django.db import connection

    totals = {side: [0, 0.0] for side in sides}
    server_cpu = dict.fromkeys(sides, 0.0)
    for side in [*sides, *sides]:
        vectors = corpus.sample(256, np.random.default_rng(len(side)))
        done = [0] * clients
        used = [0.0] * clients
        stop = threading.Event()

        def client(
            number: int,
            side: str = side,
            vectors: np.ndarray = vectors,
            done: list = done,
            used: list = used,
            stop: threading.Event = stop,
        ) -> None:
            i = number
            try:
                backend = backend_process()
                before = cpu_seconds(backend)
                while not stop.is_set():
                    sides[side](members[i % len(members)], vectors[i % len(vectors)])
                    done[number] += 1
                    i += clients
                used[number] = cpu_seconds(backend) - before
            finally:
                connection.close()

        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        stop.set()
        for thread in threads:
            thread.join()
        totals[side][0] += sum(done)
        totals[side][1] += time.perf_counter() - started
        server_cpu[side] += sum(used)
    qps = {side: count / elapsed for side, (count, elapsed) in totals.items()}
    return qps, {side: 1000 * server_cpu[side] / max(1, totals[side][0]) for side in sides}


def backend_process() -> psutil.Process:
    """The PostgreSQL backend serving this thread's connection (the server runs on this machine)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return psutil.Process(cursor.fetchone()[0])


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def own_indexes(scopes: list[Scope]) -> None:
    """Collections past DOCUMENTS_COLLECTION_INDEX_ROWS get their own HNSW graph, as in production: through
    the product's sync (documents.indexing), kept like the shared index for reruns."""
    from documents.indexing import collection_indexes_sync

    while True:
        started = time.perf_counter()
        result = collection_indexes_sync(max_builds=1)
        for name in result.built:
            print(f"  built {name} in {time.perf_counter() - started:.0f} s", flush=True)
        if not result.pending:
            return


if __name__ == "__main__":
    main()
