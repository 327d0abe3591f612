"""The documents pages: each org sees its own, another org's document is a 404, roles decide what shows."""

import pytest

from documents.models import Chunk, Collection, Document
from tests.accounts.factories import OrganizationFactory
from tests.documents.factories import ChunkFactory

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
