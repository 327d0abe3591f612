"""Reads: hybrid retrieval over an org's chunks.

Vector search (HNSW, cosine; pgvector 0.8 iterative scans, so the org and collection filters keep their
recall) and full-text search (tsvector, GIN, websearch syntax) each propose candidates; reciprocal rank fusion
orders them; a vector-only candidate must be similar enough to count; near-duplicates (overlapping chunks, the
same passage in two documents) are dropped. Every query is filtered by org first.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.postgres.search import SearchQuery, SearchRank
from django.db import connection
from django.db.models import F, Q, QuerySet, Sum
from pgvector import Vector

from documents import indexing
from documents.models import Chunk, Collection, Document
from saas.core import crypto
from saas.core.tenancy import org_id_for
from saas.llm import gateway, tracing

Scope = Collection | Sequence[Collection] | None  # one collection, several (a conversation's), or all
RRF_K = 60  # the usual constant of reciprocal rank fusion: damps the weight of the very first ranks


@dataclass(frozen=True)
class SearchHit:
    chunk_id: str
    document_id: str
    title: str
    page: int | None
    heading: str
    score: float
    text: str
    similarity: float  # cosine similarity of the chunk to the query
    embedding: list[float]

    def as_json(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id, "document_id": self.document_id, "title": self.title, "page": self.page,
            "heading": self.heading, "score": round(self.score, 6), "text": self.text,
        }  # fmt: skip


def collection_list(*, org: Any) -> list[Collection]:
    return list(Collection.objects.for_org(org).order_by("name"))


def document_list(
    *, org: Any, collection: Collection | None = None, query: str = "", status: str = ""
) -> QuerySet[Document]:
    """The org's documents, newest first: of one collection, whose title or file name holds `query`, of one
    status."""
    documents = Document.objects.for_org(org).select_related("collection").order_by("-created_at", "-pk")
    if collection is not None:
        documents = documents.filter(collection=collection)
    query = query.strip()
    if query:
        documents = documents.filter(Q(title__icontains=query) | Q(filename__icontains=query))
    if status in Document.Status.values:
        documents = documents.filter(status=status)
    return documents


def chunk_search(
    *, org: Any, query: str, collection: Scope = None, top_k: int | None = None,
    caller: gateway.Caller | None = None, query_vector: list[float] | None = None,
) -> list[SearchHit]:  # fmt: skip
    """`query_vector`: the query's embedding (by DOCUMENTS_EMBEDDING_MODEL), when the caller made it already.
    A `retrieval` span of the current trace records the passages found, with their scores (ids only)."""
    top_k = top_k or settings.DOCUMENTS_SEARCH_TOP_K
    with tracing.span("retrieval", "Search the documents", top_k=top_k) as span:
        hits = _chunk_search(org=org, query=query, collection=collection, top_k=top_k, caller=caller,
                             query_vector=query_vector)  # fmt: skip
        if span is not None:
            span.attributes["passages"] = [
                {"chunk_id": hit.chunk_id, "document_id": hit.document_id, "score": round(hit.score, 6),
                 "similarity": round(hit.similarity, 4)} for hit in hits
            ]  # fmt: skip
    return hits


def _chunk_search(
    *, org: Any, query: str, collection: Scope, top_k: int, caller: gateway.Caller | None,
    query_vector: list[float] | None,
) -> list[SearchHit]:  # fmt: skip
    caller = caller or gateway.Caller(org=org, feature="ask")
    vector = (
        query_vector or gateway.embed(caller=caller, model=settings.DOCUMENTS_EMBEDDING_MODEL, texts=[query]).vectors[0]
    )
    pool = max(top_k * 4, 20)
    chunks = _searchable(org=org, collection=collection)
    by_vector = chunk_nearest(org=org, collection=collection, vector=vector, limit=pool)
    search = SearchQuery(query, search_type="websearch", config="english")
    by_text = list(
        chunks.filter(search_vector=search)
        .annotate(rank=SearchRank(F("search_vector"), search))
        .order_by("-rank")
        .values_list("id", flat=True)[:pool]
    )

    similarity = {chunk_id: 1 - float(distance) for chunk_id, distance in by_vector}
    fused: dict[Any, float] = {}
    threshold = settings.DOCUMENTS_MIN_SIMILARITY
    for rank, (chunk_id, _) in enumerate(by_vector):
        if similarity[chunk_id] >= threshold:
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1 / (RRF_K + rank + 1)
    for rank, chunk_id in enumerate(by_text):
        fused[chunk_id] = fused.get(chunk_id, 0.0) + 1 / (RRF_K + rank + 1)
    ordered = sorted(fused, key=lambda chunk_id: -fused[chunk_id])[:pool]

    rows = {c.pk: c for c in chunks.filter(pk__in=ordered).select_related("document")}
    hits: list[SearchHit] = []
    for chunk_id in ordered:
        chunk = rows.get(chunk_id)
        if chunk is None:
            continue
        embedding = [float(x) for x in chunk.embedding]
        if any(_cosine(embedding, kept.embedding) >= settings.DOCUMENTS_DUPLICATE_SIMILARITY for kept in hits):
            continue  # the same passage again (an overlap, a copy in another document)
        sim = similarity.get(chunk_id)
        hits.append(
            SearchHit(
                chunk_id=str(chunk.pk), document_id=str(chunk.document_id), title=chunk.document.title,
                page=chunk.page, heading=chunk.heading, score=fused[chunk_id],
                text=crypto.decrypt(chunk.text_encrypted), embedding=embedding,
                similarity=sim if sim is not None else _cosine(embedding, vector),
            )
        )  # fmt: skip
        if len(hits) == top_k:
            break
    return hits


def in_scope(rows: Any, collection: Scope, field: str = "collection") -> Any:
    """`rows` narrowed to the scope: one collection, any of several (collections or their ids), or (None) the
    whole org."""
    if collection is None:
        return rows
    if isinstance(collection, Collection):
        return rows.filter(**{field: collection.pk})
    return rows.filter(**{f"{field}__in": [getattr(c, "pk", c) for c in collection]})


def _searchable(*, org: Any, collection: Scope) -> Any:
    return in_scope(Chunk.objects.for_org(org).filter(document__status=Document.Status.READY), collection)


@dataclass(frozen=True)
class VectorPlan:
    """How one nearest-neighbour query runs: an exact scan of the scope through its (org, collection) btree,
    or an HNSW index with pgvector's iterative scan (`ef_search` candidates, at most `max_scan_tuples`
    visited), forced so that the planner cannot swap one for the other on its estimates. `own_index`: the
    scope is one collection with its own graph (documents/indexing.py), which the planner picks by its
    predicate. A scope holding such collections is split into `parts`, one query each (collection ids, plan),
    whose answers are merged by distance."""

    exact: bool
    ef_search: int = 40
    iterative_scan: str = "relaxed_order"
    max_scan_tuples: int = 20_000
    own_index: bool = False
    parts: tuple[tuple[tuple[Any, ...], "VectorPlan"], ...] = ()

    def describe(self) -> str:
        if self.parts:
            return " + ".join(plan.describe() for _, plan in self.parts)
        if self.exact:
            return "exact (btree)"
        graph = "own HNSW" if self.own_index else "HNSW"
        return f"{graph} ef_search {self.ef_search}, {self.iterative_scan}"


def vector_plan(*, org: Any, limit: int, collection: Scope = None) -> VectorPlan:
    """A collection of more than DOCUMENTS_EXACT_SEARCH_ROWS chunks with its own graph: that graph, with
    DOCUMENTS_COLLECTION_EF_SEARCH candidates. Otherwise exact below DOCUMENTS_EXACT_SEARCH_ROWS chunks in
    scope (a small scope is read faster than the index can be filtered down to it, and with perfect recall);
    above, the shared HNSW index with a candidate list that grows as the scope's share of all chunks shrinks:
    a filter keeping 10% of the rows needs about ten times the candidates to find the same neighbours."""
    scope = _scope_rows(org=org, collection=collection)
    sizes, threshold = scope.sizes, settings.DOCUMENTS_EXACT_SEARCH_ROWS
    with_own = sorted((pk for pk, rows in sizes.items() if rows > threshold and pk in scope.own_index), key=str)
    if not with_own:
        return _plan(rows=sum(sizes.values()), total=scope.total, limit=limit)
    ef_search = int(min(1000, max(settings.DOCUMENTS_COLLECTION_EF_SEARCH, limit)))
    own_plan = VectorPlan(exact=False, ef_search=ef_search, own_index=True)
    parts: list[tuple[tuple[Any, ...], VectorPlan]] = [((pk,), own_plan) for pk in with_own]
    rest = sorted((pk for pk in sizes if pk not in with_own), key=str)
    if rest:
        parts.append((tuple(rest), _plan(rows=sum(sizes[pk] for pk in rest), total=scope.total, limit=limit)))
    if isinstance(collection, Collection):  # the scope is that one collection: its own graph alone
        return own_plan
    # Else the parts, even one: each runs filtered to its collections (an org-wide query could not use the index).
    return VectorPlan(exact=False, parts=tuple(parts))


def _plan(*, rows: int, total: int, limit: int) -> VectorPlan:
    if rows <= settings.DOCUMENTS_EXACT_SEARCH_ROWS:
        return VectorPlan(exact=True)
    share = min(1.0, rows / max(total, rows, 1))
    wanted = settings.DOCUMENTS_HNSW_CANDIDATES * limit / share
    return VectorPlan(
        exact=False,
        ef_search=int(min(1000, max(settings.DOCUMENTS_HNSW_EF_SEARCH, limit, wanted))),  # 1000: pgvector's cap
        max_scan_tuples=int(max(20_000, 4 * wanted)),
    )


# --- What a plan is made of, read once per search ------------------------------------------------------------
# The ready chunks of a collection are the sum of its ready documents' counts: a thousand rows to add up for a
# 100,000-chunk collection, on every search. They are kept here instead, per process, by (collection id,
# version): the version moves on with every change to the collection's ready documents (ingested, reindexed,
# deleted, erased: documents.services.collection_changed), so an entry is never stale, it only stops being
# asked for. What a search reads each time is one statement: the scope's collections with their versions and
# whether each has a valid graph of its own, and the planner's count of all chunks.
SCOPE_SIZES_MAX = 10_000  # entries; a full cache is emptied and filled again
_scope_sizes: dict[tuple[UUID, int], int] = {}


@dataclass(frozen=True)
class ScopeRows:
    sizes: dict[UUID, int]  # ready chunks per collection in scope (collections without any left out)
    total: int  # the planner's count of all chunks (-1 before the first ANALYZE)
    own_index: frozenset[UUID]  # collections in scope with a valid graph of their own


def _scope_ids(collection: Scope) -> list[UUID] | None:
    if collection is None:
        return None
    if isinstance(collection, Collection):
        return [collection.pk]
    return [UUID(str(getattr(c, "pk", c))) for c in collection]


def _scope_rows(*, org: Any, collection: Scope) -> ScopeRows:
    org_id = org_id_for(org)
    ids = _scope_ids(collection)
    in_scope = "" if ids is None else " AND c.id = ANY(%s)"
    own_index = (
        "EXISTS (SELECT FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
        " WHERE i.indrelid = %s::regclass AND i.indisvalid AND ic.relname = %s || replace(c.id::text, '-', ''))"
    )
    table = Collection._meta.db_table
    collections_sql = f"SELECT c.id, c.version, {own_index} FROM {table} c WHERE c.organization_id = %s{in_scope}"  # noqa: S608
    (total,), collections = _run(
        [
            ("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [Chunk._meta.db_table]),
            (
                collections_sql,
                [Chunk._meta.db_table, indexing.COLLECTION_INDEX_PREFIX, org_id, *([ids] if ids is not None else [])],
            ),
        ]
    )
    missing = [pk for pk, version, _ in collections if (pk, version) not in _scope_sizes]
    if missing:
        counted = dict(
            Document.objects.for_org(org_id)
            .filter(status=Document.Status.READY, collection_id__in=missing)
            .values_list("collection_id")
            .annotate(rows=Sum("chunk_count"))
            .values_list("collection_id", "rows")
        )
        if len(_scope_sizes) + len(missing) > SCOPE_SIZES_MAX:
            _scope_sizes.clear()
        for pk, version, _ in collections:
            if pk in missing:
                _scope_sizes[(pk, version)] = int(counted.get(pk) or 0)
    sizes = {pk: _scope_sizes.get((pk, version), 0) for pk, version, _ in collections}
    return ScopeRows(
        sizes={pk: rows for pk, rows in sizes.items() if rows > 0},
        total=int(total[0]),
        own_index=frozenset(pk for pk, _, own in collections if own),
    )


# --- The search itself: one round trip -----------------------------------------------------------------------


def chunk_nearest(
    *, org: Any, vector: Any, limit: int, collection: Scope = None, plan: VectorPlan | None = None
) -> list[tuple[Any, float]]:
    """The `limit` chunks of the scope nearest to `vector`: [(id, cosine distance)], nearest first."""
    plan = plan or vector_plan(org=org, collection=collection, limit=limit)
    found = [pair for rows in _run(nearest_statements(org=org, collection=collection, vector=vector, limit=limit,
                                                      plan=plan)) for pair in rows]  # fmt: skip
    found.sort(key=lambda pair: pair[1])  # relaxed order: the index may return near-ties out of order
    return found[:limit]


def nearest_statements(
    *, org: Any, vector: Any, limit: int, plan: VectorPlan, collection: Scope = None
) -> list[tuple[str, list[Any]]]:
    """The statements of one search, sent together (`_run`): per part of the plan, the index settings it needs
    (`SET LOCAL`: they end with the statement's transaction) and its query, filtered by org first.

    Exact: ordered by an expression the HNSW index cannot serve, so the planner reads the scope through its
    (org, collection) btree. HNSW: sorting is switched off, so the only way left to order by distance is an HNSW
    index; one collection is named by `=` with its id written into the SQL (client-side binding), so the planner
    can prove its own index's predicate and walks that graph alone."""
    org_id = org_id_for(org)
    text = (vector if isinstance(vector, Vector) else Vector(vector)).to_text()
    parts = plan.parts or ((None, plan),)
    statements: list[tuple[str, list[Any]]] = []
    sort_off = False
    for ids, part in parts:
        scope = _scope_ids(collection) if ids is None else [UUID(str(pk)) for pk in ids]
        if part.exact and sort_off:
            statements.append(("SET LOCAL enable_sort = on", []))
            sort_off = False
        elif not part.exact:
            if part.iterative_scan not in ("off", "relaxed_order", "strict_order"):
                raise ValueError(f"unknown iterative scan {part.iterative_scan!r}")
            statements.append((
                f"SET LOCAL hnsw.iterative_scan = {part.iterative_scan};"
                f" SET LOCAL hnsw.ef_search = {int(part.ef_search)};"
                f" SET LOCAL hnsw.max_scan_tuples = {int(part.max_scan_tuples)}; SET LOCAL enable_sort = off", []
            ))  # fmt: skip
            sort_off = True
        statements.append(_nearest_query(org_id=org_id, scope=scope, vector=text, limit=limit, exact=part.exact))
    return statements


def _nearest_query(
    *, org_id: UUID, scope: list[UUID] | None, vector: str, limit: int, exact: bool
) -> tuple[str, list[Any]]:
    where, params = ["c.organization_id = %s", "d.status = %s"], [org_id, Document.Status.READY.value]
    if scope is not None and len(scope) == 1:
        where.append("c.collection_id = %s")
        params.append(scope[0])
    elif scope is not None:
        where.append("c.collection_id = ANY(%s)")
        params.append(scope)
    # Table names, the conditions above and integers only: every value is a parameter.
    query = (
        f"SELECT c.id, c.embedding <=> %s::vector AS distance FROM {Chunk._meta.db_table} c"  # noqa: S608
        f" JOIN {Document._meta.db_table} d ON d.id = c.document_id WHERE {' AND '.join(where)}"
    )
    if exact:
        query = f"SELECT id, distance FROM ({query}) AS scope ORDER BY distance + 0.0 LIMIT {int(limit)}"  # noqa: S608
    else:
        query += f" ORDER BY distance LIMIT {int(limit)}"
    return query, [vector, *params]


def _run(statements: list[tuple[str, list[Any]]]) -> list[list[tuple[Any, ...]]]:
    """Sends the statements in one round trip (the simple query protocol; parameters bound client-side) and
    returns the rows of each that returns rows. Outside a transaction they run in one implicit transaction, so
    their `SET LOCAL`s end with them; inside one, in a savepoint that is rolled back after the reads, for the
    same reason."""
    sql = "; ".join(statement for statement, _ in statements)
    params = [param for _, values in statements for param in values]
    if connection.in_atomic_block:
        savepoint = "crewdesk_search"
        sql = f"SAVEPOINT {savepoint}; {sql}; ROLLBACK TO SAVEPOINT {savepoint}; RELEASE SAVEPOINT {savepoint}"
    results: list[list[tuple[Any, ...]]] = []
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        while True:
            if cursor.description is not None:
                results.append(cursor.fetchall())
            if not cursor.nextset():
                return results


def _cosine(a: list[float], b: list[float]) -> float:
    # Stored and query embeddings are unit length: the dot product is the cosine.
    return float(sum(x * y for x, y in zip(a, b, strict=True)))
