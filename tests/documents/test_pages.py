"""The documents pages: each org sees its own, another org's document is a 404, roles decide what shows."""

import pytest

from documents.models import Chunk, Collection, Document
from saas.core import crypto
from tests.accounts.factories import OrganizationFactory
from tests.documents.factories import ChunkFactory, CollectionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def page_client(client):
    def signed_in(membership):
        client.force_login(membership.user)
        return client

    return signed_in


def test_pages_show_the_orgs_own_documents_only(make_member, page_client):
    org_a, org_b = OrganizationFactory(), OrganizationFactory()
    theirs = ChunkFactory(organization=org_a)
    mine = ChunkFactory(organization=org_b)
    client = page_client(make_member(org_b, role="member"))
    index = client.get(f"/o/{org_b.slug}/documents/").content.decode()
    assert mine.document.title in index and theirs.document.title not in index
    assert 'id="upload-form"' in index
    detail = client.get(f"/o/{org_b.slug}/documents/{mine.document.pk}/")
    assert detail.status_code == 200 and "A passage of the handbook." in detail.content.decode()
    assert client.get(f"/o/{org_b.slug}/documents/{theirs.document.pk}/").status_code == 404
    assert client.get(f"/o/{org_b.slug}/ask/").status_code == 200


def test_a_viewer_reads_but_neither_uploads_nor_asks(make_member, page_client):
    org = OrganizationFactory()
    client = page_client(make_member(org, role="viewer"))
    index = client.get(f"/o/{org.slug}/documents/")
    assert index.status_code == 200 and 'id="upload-form"' not in index.content.decode()
    assert client.get(f"/o/{org.slug}/ask/").status_code == 403


def test_collections_delete_and_reindex_from_the_pages(make_member, page_client):
    org = OrganizationFactory()
    client = page_client(make_member(org, role="member"))
    client.post(f"/o/{org.slug}/documents/collections/new/", {"name": "Legal"})
    legal = Collection.objects.for_org(org).get(name="Legal")
    again = client.post(f"/o/{org.slug}/documents/collections/new/", {"name": "legal"}, follow=True)
    assert "already a collection" in again.content.decode()
    chunk = ChunkFactory(organization=org, document__collection=legal)
    listing = client.get(f"/o/{org.slug}/documents/?collection={legal.pk}").content.decode()
    assert chunk.document.title in listing
    client.post(f"/o/{org.slug}/documents/{chunk.document.pk}/reindex/")
    assert Document.objects.for_org(org).get(pk=chunk.document.pk).status == "queued"
    client.post(f"/o/{org.slug}/documents/{chunk.document.pk}/delete/")
    assert not Document.all_orgs.filter(pk=chunk.document.pk).exists()
    assert not Chunk.all_orgs.filter(pk=chunk.pk).exists()


def test_a_viewer_cannot_change_documents(make_member, page_client):
    org = OrganizationFactory()
    chunk = ChunkFactory(organization=org)
    client = page_client(make_member(org, role="viewer"))
    assert client.post(f"/o/{org.slug}/documents/{chunk.document.pk}/delete/").status_code == 403
    assert client.post(f"/o/{org.slug}/documents/collections/new/", {"name": "X"}).status_code == 403
    assert Document.all_orgs.filter(pk=chunk.document.pk).exists()


# --- Search, pagination and rendering (issue #16) -----------------------------------------------------------


def test_the_documents_table_is_searched_filtered_and_paged_on_the_server(make_member, page_client):
    from tests.documents.factories import DocumentFactory

    org, other = OrganizationFactory(), OrganizationFactory()
    collection = CollectionFactory(organization=org, name="Policies")
    for n in range(30):
        DocumentFactory(organization=org, collection=collection, title=f"Policy {n:02d}")
    DocumentFactory(organization=org, collection=collection, title="Travel guide", status=Document.Status.FAILED,
                    failure_reason="No text layer.")  # fmt: skip
    DocumentFactory(organization=other, title="Policy of another team")
    client = page_client(make_member(org, role="member"))
    base = f"/o/{org.slug}/documents/"

    first = client.get(base).content.decode()
    assert first.count("<tr data-document=") == 25 and "Page 1 of 2 · 31 documents" in first
    assert 'href="?page=2"' in first
    second = client.get(base, {"page": 2}).content.decode()
    assert second.count("<tr data-document=") == 6 and "Policy 00" in second

    found = client.get(base, {"q": "policy"}).content.decode()
    assert found.count("<tr data-document=") == 25 and "another team" not in found and "Travel guide" not in found
    page2 = client.get(base, {"q": "policy", "page": 2}).content.decode()
    assert page2.count("<tr data-document=") == 5
    assert 'href="?q=policy&amp;page=1"' in page2  # the page links keep the search
    failed = client.get(base, {"status": "failed"}).content.decode()
    assert failed.count("<tr data-document=") == 1 and "Travel guide" in failed
    nothing = client.get(base, {"q": "zebra"}).content.decode()
    assert "No document matches “zebra”." in nothing
    assert client.get(base, {"page": "999"}).status_code == 200  # the last page, not an error


def test_a_chunk_shows_as_rendered_markdown_and_hostile_html_stays_text(make_member, page_client):
    org = OrganizationFactory()
    text = "**Refunds** take *30 days*.\n\n| Plan | Days |\n|---|---|\n| Pro | 30 |\n\n<script>alert(1)</script>"
    chunk = ChunkFactory(organization=org, text_encrypted=crypto.encrypt(text))
    client = page_client(make_member(org, role="member"))
    page = client.get(f"/o/{org.slug}/documents/{chunk.document.pk}/").content.decode()
    assert '<div class="md"><p><strong>Refunds</strong> take <em>30 days</em>.</p>' in page
    assert "<table>" in page and "<td>Pro</td>" in page
    assert "<script>alert(1)</script>" not in page and "**Refunds**" not in page
