"""Reads: hybrid retrieval over an org's chunks.

Vector search (HNSW, cosine; pgvector 0.8 iterative scans, so the org and collection filters keep their
recall) and full-text search (tsvector, GIN, websearch syntax) each propose candidates; reciprocal rank fusion
orders them; a vector-only candidate must be similar enough to count; near-duplicates (overlapping chunks, the
same passage in two documents) are dropped. Every query is filtered by org first.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.postgres.search import SearchQuery, SearchRank
from django.db import connection, transaction
from django.db.models import F, Q, QuerySet, Sum
from pgvector.django import CosineDistance

from documents import indexing
from documents.models import Chunk, Collection, Document
from saas.core import crypto
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
    sizes, total = _scope_rows(org=org, collection=collection)
    threshold = settings.DOCUMENTS_EXACT_SEARCH_ROWS
    large = {pk: rows for pk, rows in sizes.items() if rows > threshold}
    own = indexing.collection_indexes_valid(indexing.collection_index_name(pk) for pk in large)
    with_own = sorted((pk for pk in large if indexing.collection_index_name(pk) in own), key=str)
    if not with_own:
        return _plan(rows=sum(sizes.values()), total=total, limit=limit)
    ef_search = int(min(1000, max(settings.DOCUMENTS_COLLECTION_EF_SEARCH, limit)))
    own_plan = VectorPlan(exact=False, ef_search=ef_search, own_index=True)
    parts: list[tuple[tuple[Any, ...], VectorPlan]] = [((pk,), own_plan) for pk in with_own]
    rest = sorted((pk for pk in sizes if pk not in with_own), key=str)
    if rest:
        parts.append((tuple(rest), _plan(rows=sum(sizes[pk] for pk in rest), total=total, limit=limit)))
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


def _scope_rows(*, org: Any, collection: Scope) -> tuple[dict[Any, int], int]:
    """The ready chunks in scope per collection (from their documents' counts) and the planner's count of all
    chunks."""
    documents = in_scope(Document.objects.for_org(org).filter(status=Document.Status.READY), collection)
    sizes = {
        pk: int(rows or 0)
        for pk, rows in documents.values_list("collection_id")
        .annotate(rows=Sum("chunk_count"))
        .values_list("collection_id", "rows")
    }
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = 'documents_chunk'::regclass")
        total = int(cursor.fetchone()[0])  # -1 before the first ANALYZE
    return sizes, total


def chunk_nearest(
    *, org: Any, vector: list[float], limit: int, collection: Scope = None, plan: VectorPlan | None = None
) -> list[tuple[Any, float]]:
    """The `limit` chunks of the scope nearest to `vector`: [(id, cosine distance)], nearest first."""
    plan = plan or vector_plan(org=org, collection=collection, limit=limit)
    if not plan.parts:
        return _nearest(org=org, collection=collection, vector=vector, limit=limit, plan=plan)
    found = []
    for ids, part in plan.parts:
        found += _nearest(org=org, collection=list(ids), vector=vector, limit=limit, plan=part)
    found.sort(key=lambda pair: pair[1])
    return found[:limit]


def _nearest(
    *, org: Any, collection: Any, vector: list[float], limit: int, plan: VectorPlan
) -> list[tuple[Any, float]]:
    if isinstance(collection, list | tuple) and len(collection) == 1:
        collection = collection[0]
    if collection is not None and not isinstance(collection, list | tuple):
        # One collection by `=` (its id is written into the SQL): the planner can prove its own index's predicate.
        ready = Chunk.objects.for_org(org).filter(document__status=Document.Status.READY)
        chunks = ready.filter(collection=getattr(collection, "pk", collection))
    else:
        chunks = _searchable(org=org, collection=collection)
    chunks = chunks.annotate(distance=CosineDistance("embedding", vector))
    with transaction.atomic():
        if plan.exact:
            # An ORDER BY the HNSW index cannot serve: the planner reads the scope through its btree.
            ordered = chunks.order_by(F("distance") + 0.0)
        else:
            with connection.cursor() as cursor:
                # No sort allowed: the only way left to order by distance is an HNSW index.
                cursor.execute(
                    "SELECT set_config('hnsw.iterative_scan', %s, true), set_config('hnsw.ef_search', %s, true),"
                    " set_config('hnsw.max_scan_tuples', %s, true), set_config('enable_sort', 'off', true)",
                    [plan.iterative_scan, str(plan.ef_search), str(plan.max_scan_tuples)],
                )
            ordered = chunks.order_by("distance")
        found = list(ordered.values_list("id", "distance")[:limit])
    found.sort(key=lambda pair: pair[1])  # relaxed order: the index may return near-ties out of order
    return found


def _cosine(a: list[float], b: list[float]) -> float:
    # Stored and query embeddings are unit length: the dot product is the cosine.
    return float(sum(x * y for x, y in zip(a, b, strict=True)))
