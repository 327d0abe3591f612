"""The vector half of search: which plan a scope gets, that each plan runs as it says, and that both find the
true nearest chunks of the scope and nothing outside it."""

from contextlib import nullcontext

import numpy as np
import pytest
from django.db import connection, transaction

from documents import ingestion, privacy, services
from documents.models import Document
from documents.selectors import VectorPlan, _run, chunk_nearest, vector_plan
from saas.core.privacy import Subject
from saas.core.tenancy import OrgScopeMismatch, org_scope
from tests.accounts.factories import OrganizationFactory, UserFactory
from tests.documents.factories import ChunkFactory, CollectionFactory, DocumentFactory

pytestmark = pytest.mark.django_db


def _vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    rows = rng.standard_normal((n, 384))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _fill(document: Document, vectors: np.ndarray) -> list:
    return [
        ChunkFactory(organization=document.organization, document=document, position=i, embedding=list(v)).pk
        for i, v in enumerate(vectors)
    ]


@pytest.fixture
def library():
    """Org A: a large collection (240 chunks) and a small one (24); a queued document and org B hold the
    query's exact twins, which must never be found."""
    rng = np.random.default_rng(3)
    query = _vectors(rng, 1)[0]
    org, other = OrganizationFactory(), OrganizationFactory()
    large, small = CollectionFactory(organization=org), CollectionFactory(organization=org)
    large_doc = DocumentFactory(organization=org, collection=large, chunk_count=240)
    small_doc = DocumentFactory(organization=org, collection=small, chunk_count=24)
    vectors = {"large": _vectors(rng, 240), "small": _vectors(rng, 24)}
    ids = {"large": _fill(large_doc, vectors["large"]), "small": _fill(small_doc, vectors["small"])}
    queued = DocumentFactory(organization=org, collection=large, status=Document.Status.QUEUED, chunk_count=3)
    _fill(queued, np.array([query] * 3))
    _fill(DocumentFactory(organization=other, chunk_count=3), np.array([query] * 3))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE documents_chunk")
    return {"org": org, "large": large, "small": small, "query": query, "vectors": vectors, "ids": ids}


def _truth(library: dict, name: str, k: int) -> list:
    distances = 1 - library["vectors"][name] @ library["query"]
    return [library["ids"][name][i] for i in np.argsort(distances)[:k]]


def _hnsw_scans() -> int:
    with connection.cursor() as cursor:
        # This transaction's scans of the index, not yet reported to the statistics collector.
        cursor.execute("SELECT pg_stat_get_xact_numscans('documents_chunk_embedding'::regclass)")
        return int(cursor.fetchone()[0])


def test_a_small_scope_is_read_exactly_and_a_large_one_through_the_index(library, settings):
    settings.DOCUMENTS_EXACT_SEARCH_ROWS = 100
    settings.DOCUMENTS_HNSW_EF_SEARCH, settings.DOCUMENTS_HNSW_CANDIDATES = 10, 2.0
    org = library["org"]
    assert vector_plan(org=org, collection=library["small"], limit=10) == VectorPlan(exact=True)

    plan = vector_plan(org=org, collection=library["large"], limit=10)
    # 240 ready chunks of 270: the queued document's 3 do not count, the other org's are in the total.
    assert plan.exact is False
    assert plan.ef_search == int(2.0 * 10 / (240 / 270))
    assert plan.iterative_scan == "relaxed_order" and plan.max_scan_tuples == 20_000
    # The whole org: 264 chunks, still above the threshold.
    assert vector_plan(org=org, limit=10).exact is False


def test_the_candidate_list_grows_as_the_scope_shrinks_up_to_pgvectors_cap(library, settings):
    settings.DOCUMENTS_EXACT_SEARCH_ROWS, settings.DOCUMENTS_HNSW_EF_SEARCH = 0, 40
    settings.DOCUMENTS_HNSW_CANDIDATES = 2.0
    small = vector_plan(org=library["org"], collection=library["small"], limit=10)  # 24 of 270 chunks
    assert small.ef_search == int(2.0 * 10 / (24 / 270))
    settings.DOCUMENTS_HNSW_CANDIDATES = 50.0
    capped = vector_plan(org=library["org"], collection=library["small"], limit=10)
    assert capped.ef_search == 1000 and capped.max_scan_tuples == int(4 * (50.0 * 10 / (24 / 270)))


@pytest.mark.parametrize("exact", [True, False])
def test_each_plan_finds_the_true_neighbours_of_its_scope_and_nothing_else(library, exact):
    plan = VectorPlan(exact=True) if exact else VectorPlan(exact=False, ef_search=400)
    for name in ("large", "small"):
        found = chunk_nearest(
            org=library["org"], collection=library[name], vector=list(library["query"]), limit=10, plan=plan
        )
        assert [pk for pk, _ in found] == _truth(library, name, 10)
        distances = [d for _, d in found]
        assert distances == sorted(distances)


def test_each_plan_runs_the_way_it_says_whatever_the_planner_would_prefer(library):
    vector = list(library["query"])
    before = _hnsw_scans()
    chunk_nearest(org=library["org"], collection=library["small"], vector=vector, limit=5, plan=VectorPlan(exact=True))
    assert _hnsw_scans() == before  # the exact scan never touches the HNSW index
    # 24 rows of 270: left to itself the planner reads them through the btree; the HNSW plan must not.
    plan = VectorPlan(exact=False, ef_search=100)
    chunk_nearest(org=library["org"], collection=library["small"], vector=vector, limit=5, plan=plan)
    assert _hnsw_scans() == before + 1


def test_search_picks_the_plan_by_itself(library, settings):
    settings.DOCUMENTS_EXACT_SEARCH_ROWS = 100
    vector = list(library["query"])
    before = _hnsw_scans()
    assert [pk for pk, _ in chunk_nearest(org=library["org"], collection=library["small"], vector=vector,
                                          limit=10)] == _truth(library, "small", 10)  # fmt: skip
    assert _hnsw_scans() == before
    found = chunk_nearest(org=library["org"], collection=library["large"], vector=vector, limit=10)
    assert _hnsw_scans() == before + 1
    assert [pk for pk, _ in found] == _truth(library, "large", 10)


def test_another_orgs_collection_is_searched_as_empty(library):
    other = OrganizationFactory()
    vector = list(library["query"])
    for plan in (None, VectorPlan(exact=True), VectorPlan(exact=False, ef_search=400)):
        assert chunk_nearest(org=other, collection=library["large"], vector=vector, limit=10, plan=plan) == []
    assert vector_plan(org=other, collection=[library["large"], library["small"]], limit=10) == VectorPlan(exact=True)
    with org_scope(other), pytest.raises(OrgScopeMismatch):
        chunk_nearest(org=library["org"], collection=library["large"], vector=vector, limit=10)


def test_a_search_reads_its_plan_and_its_neighbours_in_two_round_trips(library, settings, django_assert_num_queries):
    settings.DOCUMENTS_EXACT_SEARCH_ROWS = 100
    vector = list(library["query"])
    # The first plan of a collection version counts its chunks: one statement more (for the whole org, both
    # collections are counted by then).
    for scope, first in ((library["large"], 3), (library["small"], 3), (None, 2)):
        with django_assert_num_queries(first):
            chunk_nearest(org=library["org"], collection=scope, vector=vector, limit=10)
        with django_assert_num_queries(2):  # the scope's versions and index state; the search with its settings
            found = chunk_nearest(org=library["org"], collection=scope, vector=vector, limit=10)
        names = ("large", "small") if scope is None else (next(k for k in ("large", "small") if library[k] == scope),)
        ids = {pk for name in names for pk in library["ids"][name]}
        assert len(found) == 10 and {pk for pk, _ in found} <= ids


def _upload(org, collection, text: str, user=None) -> Document:
    document = services.document_upload(
        org=org, data=text.encode(), filename="notes.md", collection=collection, user=user
    )
    ingested = ingestion.document_ingest(org_id=org.pk, document_id=document.pk)
    assert ingested is not None
    return ingested


def test_the_cached_scope_sizes_follow_every_change_to_the_collections_chunks(settings, django_assert_num_queries):
    """The ready chunks per collection are kept by collection version: each step below moves the collection
    across the exact / HNSW line, and a plan that counted on a stale size would stay on the wrong side."""
    settings.DOCUMENTS_EXACT_SEARCH_ROWS = 100
    org, user = OrganizationFactory(), UserFactory()
    collection = CollectionFactory(organization=org)
    DocumentFactory(organization=org, collection=collection, chunk_count=100)

    def exact() -> bool:
        return vector_plan(org=org, collection=collection, limit=10).exact

    assert exact() is True  # 100 ready chunks: exact up to the threshold
    with django_assert_num_queries(1):  # counted once per version, then only the versions are read
        assert exact() is True
    added = _upload(org, collection, "# Notes\n\nThe office opens at 8 am.")
    assert added.status == Document.Status.READY and added.chunk_count == 1
    assert exact() is False  # added: 101
    services.document_reindex(org=org, document_id=added.pk)
    assert exact() is True  # reindexing: its chunk is out of the search until ingested again
    ingestion.document_ingest(org_id=org.pk, document_id=added.pk)
    assert exact() is False
    services.document_delete(org=org, document_id=added.pk)
    assert exact() is True  # removed
    theirs = _upload(org, collection, "# Parking\n\nParking is free in the north lot.", user=user)
    assert exact() is False
    subject = Subject(user_id=user.pk, org_id=org.pk, pseudonym="x", texts=(), transfer_content=False)
    assert privacy.erase_user(subject=subject, batch_size=10) == 1
    assert not Document.objects.for_org(org).filter(pk=theirs.pk).exists()
    assert exact() is True  # erased


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("atomic", [False, True])
def test_a_searchs_index_settings_hold_for_its_statements_and_end_with_them(atomic):
    with transaction.atomic() if atomic else nullcontext():
        rows = _run([("SET LOCAL hnsw.ef_search = 77; SET LOCAL enable_sort = off", []), ("SHOW hnsw.ef_search", []),
                     ("SHOW enable_sort", [])])  # fmt: skip
        assert rows == [[("77",)], [("off",)]]
        with connection.cursor() as cursor:
            cursor.execute("SHOW enable_sort")
            assert cursor.fetchone()[0] == "on"
            cursor.execute("SHOW hnsw.ef_search")
            assert cursor.fetchone()[0] != "77"
