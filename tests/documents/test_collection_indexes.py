"""A large collection's own HNSW graph (documents/indexing.py): built by the sync once the collection passes the
threshold, picked by the planner for a search of that collection (EXPLAIN shows it; the search uses it),
combined with the other collections for a wider scope, never showing another org's chunks, and dropped when
the collection shrinks or is erased. CREATE INDEX CONCURRENTLY cannot run in a transaction: these tests commit."""

import numpy as np
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from documents import indexing, privacy, services
from documents.models import Document
from documents.selectors import chunk_nearest, vector_plan
from tests.accounts.factories import OrganizationFactory
from tests.documents.factories import ChunkFactory, CollectionFactory, DocumentFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    rows = rng.standard_normal((n, 384))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _fill(document: Document, vectors: np.ndarray) -> list:
    return [
        ChunkFactory(organization=document.organization, document=document, position=i, embedding=list(v)).pk
        for i, v in enumerate(vectors)
    ]


def _own_indexes() -> dict[str, bool]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = 'documents_chunk'::regclass AND starts_with(c.relname::text, %s)",
            [indexing.COLLECTION_INDEX_PREFIX],
        )
        return dict(cursor.fetchall())


@pytest.fixture
def library(settings):
    """Org A: a large collection (240 chunks, two documents) and a small one (24); org B holds the query's exact
    twins in a large collection of its own, which must never be found from org A."""
    settings.DOCUMENTS_EXACT_SEARCH_ROWS = settings.DOCUMENTS_COLLECTION_INDEX_ROWS = 100
    settings.DOCUMENTS_COLLECTION_EF_SEARCH, settings.DOCUMENTS_COLLECTION_INDEX_MAX_SHARE = 100, 1.0
    rng = np.random.default_rng(5)
    query = _vectors(rng, 1)[0]
    org, other = OrganizationFactory(), OrganizationFactory()
    large, small = CollectionFactory(organization=org), CollectionFactory(organization=org)
    first = DocumentFactory(organization=org, collection=large, chunk_count=180)
    second = DocumentFactory(organization=org, collection=large, chunk_count=60)
    small_doc = DocumentFactory(organization=org, collection=small, chunk_count=24)
    vectors = {"large": _vectors(rng, 240), "small": _vectors(rng, 24)}
    ids = {
        "large": _fill(first, vectors["large"][:180]) + _fill(second, vectors["large"][180:]),
        "small": _fill(small_doc, vectors["small"]),
    }
    theirs = CollectionFactory(organization=other)
    _fill(DocumentFactory(organization=other, collection=theirs, chunk_count=120), np.array([query] * 120))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE documents_chunk")
    yield {"org": org, "other": other, "large": large, "small": small, "theirs": theirs, "second": second,
           "small_doc": small_doc,
           "query": query, "vectors": vectors, "ids": ids}  # fmt: skip
    with connection.cursor() as cursor:  # a flush empties the tables but keeps their indexes
        for name in _own_indexes():
            cursor.execute(f'DROP INDEX IF EXISTS "{name}"')


def _truth(library: dict, names: tuple[str, ...], k: int) -> list:
    ids = [pk for name in names for pk in library["ids"][name]]
    vectors = np.concatenate([library["vectors"][name] for name in names])
    return [ids[i] for i in np.argsort(1 - vectors @ library["query"])[:k]]


def _scans(name: str) -> int:
    with connection.cursor() as cursor:
        # This transaction's scans of the index, not yet reported to the statistics collector.
        cursor.execute("SELECT pg_stat_get_xact_numscans(%s::regclass)", [name])
        return int(cursor.fetchone()[0])


def test_a_collection_past_the_threshold_gets_its_own_index_and_the_planner_uses_it(library):
    own = indexing.collection_index_name(library["large"].pk)
    theirs = indexing.collection_index_name(library["theirs"].pk)
    first = indexing.collection_indexes_sync(max_builds=1)
    assert first.built == [own] and first.pending == 1  # the largest first, one build per run
    assert indexing.collection_indexes_sync(max_builds=1).built == [theirs]
    assert indexing.collection_indexes_sync().built == []  # idempotent
    assert _own_indexes() == {own: True, theirs: True}  # the small collection has none

    plan = vector_plan(org=library["org"], collection=library["large"], limit=10)
    assert plan.own_index and plan.ef_search == 100 and not plan.parts
    vector = list(library["query"])
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        before = {name: _scans(name) for name in (own, "documents_chunk_embedding")}
        found = chunk_nearest(org=library["org"], collection=library["large"], vector=vector, limit=10)
        assert _scans(own) == before[own] + 1
        assert _scans("documents_chunk_embedding") == before["documents_chunk_embedding"]
    assert [pk for pk, _ in found] == _truth(library, ("large",), 10)
    # The search is sent with its index settings in one round trip: its query is the statement that orders by distance.
    statements = [s for q in queries.captured_queries for s in q["sql"].split("; ")]
    search = next(s for s in statements if "ORDER BY" in s and "<=>" in s)
    assert library["org"].pk.hex in search  # the org filter stays on the query
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute(f"EXPLAIN {search}")
        explained = "\n".join(row[0] for row in cursor.fetchall())
    assert f"Index Scan using {own}" in explained


def test_a_wider_scope_searches_each_own_index_and_the_rest_then_merges(library):
    indexing.collection_indexes_sync(max_builds=2)
    own = indexing.collection_index_name(library["large"].pk)
    vector = list(library["query"])
    for scope in (None, [library["large"], library["small"]]):  # the whole org, or a conversation's collections
        plan = vector_plan(org=library["org"], collection=scope, limit=10)
        assert [(ids, part.own_index, part.exact) for ids, part in plan.parts] == [
            ((library["large"].pk,), True, False),
            ((library["small"].pk,), False, True),
        ]
        with transaction.atomic():
            before = _scans(own)
            found = chunk_nearest(org=library["org"], collection=scope, vector=vector, limit=10)
            assert _scans(own) == before + 1
        assert [pk for pk, _ in found] == _truth(library, ("large", "small"), 10)
        # Org B's twins of the query (distance 0, in a collection with its own index) are never found.
        assert all(distance > 0.1 for _, distance in found)


def test_an_org_whose_only_collection_has_its_own_graph_is_searched_through_it(library):
    indexing.collection_indexes_sync(max_builds=2)
    services.document_delete(org=library["org"], document_id=library["small_doc"].pk)  # org A: the large one left
    plan = vector_plan(org=library["org"], limit=10)
    assert [(ids, part.own_index) for ids, part in plan.parts] == [((library["large"].pk,), True)]
    found = chunk_nearest(org=library["org"], vector=list(library["query"]), limit=10)
    assert [pk for pk, _ in found] == _truth(library, ("large",), 10)


def test_a_collection_holding_a_large_share_of_all_chunks_is_left_to_the_shared_index(library, settings):
    settings.DOCUMENTS_COLLECTION_INDEX_MAX_SHARE = 0.5  # 384 chunks: org A's large collection holds 240
    result = indexing.collection_indexes_sync(max_builds=5)
    assert result.built == [indexing.collection_index_name(library["theirs"].pk)] and result.pending == 0
    settings.DOCUMENTS_COLLECTION_INDEX_MAX_SHARE = 0.1  # one built is kept
    assert indexing.collection_indexes_sync().dropped == []


def test_an_index_not_built_yet_is_not_counted_on(library):
    plan = vector_plan(org=library["org"], collection=library["large"], limit=10)
    assert not plan.own_index and not plan.exact  # the shared index, with its filter and its candidate list
    found = chunk_nearest(org=library["org"], collection=library["large"], vector=list(library["query"]), limit=10)
    assert [pk for pk, _ in found] == _truth(library, ("large",), 10)


def test_a_failed_build_is_dropped_and_built_again(library):
    own = indexing.collection_index_name(library["large"].pk)
    indexing.collection_indexes_sync(max_builds=2)
    with connection.cursor() as cursor:  # what a CONCURRENTLY build that failed half-way leaves
        cursor.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass", [own])
    assert vector_plan(org=library["org"], collection=library["large"], limit=10).own_index is False
    result = indexing.collection_indexes_sync(max_builds=2)
    assert result.dropped == [own] and result.built == [own]
    assert _own_indexes()[own] is True


def test_the_index_goes_when_the_collection_is_erased_or_shrinks_under_half(library, settings, monkeypatch):
    # The syncs that erasure and deletion queue are counted here and run by the test itself: a live worker of
    # the session would run them with its own settings, racing the thresholds this test sets.
    queued = []
    monkeypatch.setattr("documents.services.enqueue_index_sync", lambda: queued.append("sync"))
    monkeypatch.setattr("documents.privacy.enqueue_index_sync", lambda: queued.append("sync"))
    indexing.collection_indexes_sync(max_builds=2)
    own = indexing.collection_index_name(library["large"].pk)
    theirs = indexing.collection_index_name(library["theirs"].pk)
    while privacy.erase_org(org_id=library["other"].pk, batch_size=100):  # documents, then collections
        pass
    assert queued  # erasure asks for a sync
    assert indexing.collection_indexes_sync().dropped == [theirs]
    assert set(_own_indexes()) == {own}

    settings.DOCUMENTS_COLLECTION_INDEX_ROWS = 300  # 240 chunks: under the threshold, above half of it: kept
    assert indexing.collection_indexes_sync().dropped == []
    queued.clear()
    services.document_delete(org=library["org"], document_id=library["second"].pk)  # 180 left, under 150? no
    assert queued  # a deletion asks for a sync too
    assert indexing.collection_indexes_sync().dropped == []
    settings.DOCUMENTS_COLLECTION_INDEX_ROWS = 400  # 180 under half of it: dropped
    assert indexing.collection_indexes_sync().dropped == [own]
    assert _own_indexes() == {}
    assert vector_plan(org=library["org"], collection=library["large"], limit=10).own_index is False


def test_the_sync_refuses_to_run_in_a_transaction(library):
    with transaction.atomic(), pytest.raises(RuntimeError, match="outside a transaction"):
        indexing.collection_indexes_sync()
