"""Building the chunks' HNSW index within the machine's means.

pgvector builds an HNSW graph in `maintenance_work_mem`; a graph that does not fit is finished on disk, which
is many times slower (a fixed 1 GB took a 1,000,000-chunk build past 490,000 rows and then never finished on
this 2-core machine). The build settings are therefore derived from the index it will build and the machine
it runs on: memory for the whole graph plus a margin, but never more than half of what is free, and one
parallel worker per core beside the leader.

`DOCUMENTS_INDEX_BUILD_MEMORY` (bytes, 0 = derive) overrides the memory when PostgreSQL runs on another
machine than the process that builds (the free memory measured here is this machine's).
"""

import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import psutil
from django.conf import settings
from django.db import connection
from django.db.models import Sum

MB = 1024 * 1024
GB = 1024 * MB

# pgvector's in-memory HNSW element: the vector (4 bytes a dimension) plus its neighbour lists (2m on layer 0,
# m on the few upper layers, 6-byte item pointers with their distances) and the element's own bookkeeping.
ELEMENT_OVERHEAD_BYTES = 160
MARGIN = 1.25  # the graph's size is an estimate: room for its upper layers and allocator slack


@dataclass(frozen=True)
class BuildSettings:
    maintenance_work_mem_mb: int
    max_parallel_maintenance_workers: int
    graph_bytes: int  # the estimated size of the graph being built
    fits: bool  # False: even half the free memory is too small, and the build will spill to disk

    def statements(self) -> list[str]:
        """`SET` statements for the session (or `SET LOCAL` in a transaction) that runs CREATE INDEX."""
        return [
            f"SET maintenance_work_mem = '{self.maintenance_work_mem_mb}MB'",
            f"SET max_parallel_maintenance_workers = {self.max_parallel_maintenance_workers}",
        ]


def hnsw_graph_bytes(*, rows: int, dimensions: int, m: int) -> int:
    return rows * (4 * dimensions + 3 * m * 10 + ELEMENT_OVERHEAD_BYTES)


def build_settings(
    *, rows: int, dimensions: int, m: int, available_bytes: int | None = None, cores: int | None = None,
    memory_override: int = 0,
) -> BuildSettings:  # fmt: skip
    available = psutil.virtual_memory().available if available_bytes is None else available_bytes
    cores = (os.cpu_count() or 1) if cores is None else cores
    graph = hnsw_graph_bytes(rows=rows, dimensions=dimensions, m=m)
    wanted = max(64 * MB, int(graph * MARGIN))
    ceiling = memory_override or max(64 * MB, available // 2)
    memory = min(wanted, ceiling)
    return BuildSettings(
        maintenance_work_mem_mb=memory // MB,
        # The leader builds too: one worker per further core (PostgreSQL's own cap is max_worker_processes).
        max_parallel_maintenance_workers=max(0, min(cores - 1, 7)),
        graph_bytes=graph,
        fits=memory >= graph,
    )


# --- A collection's own graph -------------------------------------------------------------------------------
# One HNSW graph over every chunk serves a search filtered to one collection badly once the collection is a small
# share of the table: the graph walk meets mostly other collections' chunks, so `ef_search` must grow as the
# share shrinks (at 1,000,000 chunks a 10% collection needed 400 candidates: p50 37 ms). A collection past
# DOCUMENTS_COLLECTION_INDEX_ROWS ready chunks therefore gets its own graph, a partial index
# (`WHERE collection_id = ...`) that the planner picks for a query filtered to that collection (the id is written
# into the SQL, so the predicate is proven at planning): no filtering, 40 candidates, recall@10 1.000 (@20 0.998)
# on a 100,000-chunk collection at 2-3 ms of CPU (the shared graph filtered to it: 400 candidates, 0.993, 6-9 ms).
# `collection_indexes_sync` keeps the set of these indexes in line with the collections: built (CONCURRENTLY,
# within the memory derived above) when a collection passes the threshold, dropped when it falls under half of
# it (a collection that hovers at the threshold is not rebuilt again and again) or is deleted. A collection that
# holds more than DOCUMENTS_COLLECTION_INDEX_MAX_SHARE of all chunks gets none: the shared graph filtered to it
# needs few extra candidates, and a graph of its own would double a large part of the index in memory (it gets
# one later if the table grows around it; an index once built is kept whatever the share).

COLLECTION_INDEX_PREFIX = "documents_chunk_emb_"
# The shared graph's: pgvector's 16 / 64 gave 0.997 at ef_search 64 on a 100,000-chunk collection but only 0.915
# at 100 on a 500,000-chunk one (bench/retrieval.py's data).
COLLECTION_INDEX_M, COLLECTION_INDEX_EF_CONSTRUCTION = 24, 128
SYNC_LOCK = 0x646F6373  # pg advisory lock: one sync (and so one build) at a time across workers


def collection_index_name(collection_id: Any) -> str:
    return COLLECTION_INDEX_PREFIX + uuid.UUID(str(collection_id)).hex


@dataclass(frozen=True)
class SyncResult:
    built: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    pending: int = 0  # collections still waiting for their index (built by the next run)
    busy: bool = False  # another sync held the lock: nothing done


def collection_indexes_sync(*, max_builds: int = 1) -> SyncResult:
    """Drops the indexes of collections that are gone or fell under half the threshold (and failed builds),
    then builds at most `max_builds` missing ones, largest collection first. Idempotent; runs outside a
    transaction (CREATE/DROP INDEX CONCURRENTLY cannot run in one). A cross-org maintenance job: it reads every
    org's documents (`all_orgs`), and the indexes hold no org's data apart from the table's own rows."""
    from documents.models import EMBEDDING_DIMENSIONS, Document

    if connection.in_atomic_block:
        raise RuntimeError("collection_indexes_sync builds indexes CONCURRENTLY: call it outside a transaction")
    threshold = settings.DOCUMENTS_COLLECTION_INDEX_ROWS
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [SYNC_LOCK])
        if not cursor.fetchone()[0]:
            return SyncResult(busy=True)
        try:
            sizes = dict(
                Document.all_orgs.filter(status=Document.Status.READY)
                .values_list("collection_id")
                .annotate(rows=Sum("chunk_count"))
                .filter(rows__gte=max(1, threshold // 2))
                .values_list("collection_id", "rows")
            )
            total = Document.all_orgs.filter(status=Document.Status.READY).aggregate(rows=Sum("chunk_count"))["rows"]
            most = settings.DOCUMENTS_COLLECTION_INDEX_MAX_SHARE * (total or 0)
            keep = {collection_index_name(pk): rows for pk, rows in sizes.items()}
            cursor.execute(
                "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " WHERE i.indrelid = 'documents_chunk'::regclass AND starts_with(c.relname::text, %s)",
                [COLLECTION_INDEX_PREFIX],
            )
            existing = dict(cursor.fetchall())
            result = SyncResult()
            for name, valid in sorted(existing.items()):
                if name not in keep or not valid:
                    cursor.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')
                    result.dropped.append(name)
            missing = [(rows, pk) for pk, rows in sizes.items() if not existing.get(collection_index_name(pk))]
            wanted = sorted(((rows, pk) for rows, pk in missing if threshold <= rows <= most), reverse=True)
            for rows, pk in wanted[:max_builds]:
                build = build_settings(
                    rows=rows, dimensions=EMBEDDING_DIMENSIONS, m=COLLECTION_INDEX_M,
                    memory_override=settings.DOCUMENTS_INDEX_BUILD_MEMORY,
                )  # fmt: skip
                for statement in build.statements():
                    cursor.execute(statement)
                name = collection_index_name(pk)
                cursor.execute(
                    f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{name}" ON documents_chunk USING hnsw'
                    f" (embedding vector_cosine_ops) WITH (m = {COLLECTION_INDEX_M},"
                    f" ef_construction = {COLLECTION_INDEX_EF_CONSTRUCTION})"
                    f" WHERE collection_id = '{uuid.UUID(str(pk))}'::uuid"
                )
                cursor.execute("RESET maintenance_work_mem; RESET max_parallel_maintenance_workers")
                result.built.append(name)
            return SyncResult(built=result.built, dropped=result.dropped, pending=max(0, len(wanted) - max_builds))
        finally:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [SYNC_LOCK])
