"""The Overview: the getting-started checklist ticked from the team's real data, the sample documents loaded
through the document service and ingested for real, and the team's activity in words."""

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts import permissions
from accounts.models import AuditEvent, Membership
from accounts.permissions import Principal
from agents.models import Run
from analytics import overview, samples
from documents import ingestion
from documents.models import Collection, Document
from saas.llm.models import LLMCall, ModelConfig
from saas.llm.provider_models import OrgProvider
from saas.llm.registry import sync_registry
from tests.accounts.conftest import issue_key
from tests.accounts.factories import InvitationFactory, MembershipFactory
from tests.agents.factories import RunFactory
from tests.documents.factories import DocumentFactory

pytestmark = pytest.mark.django_db


def _principal(membership: Membership) -> Principal:
    return permissions.principal_for_member(membership)


def _ticks(membership: Membership) -> dict[str, bool]:
    steps = overview.onboarding_steps(org=membership.organization, principal=_principal(membership))
    return {step.key: step.done for step in steps}


def test_each_step_is_ticked_by_what_exists_in_the_team_and_nothing_else():
    owner: Any = MembershipFactory(role="owner")
    org = owner.organization
    other: Any = MembershipFactory(role="owner")  # another team's data ticks nothing here
    DocumentFactory(organization=other.organization)
    issue_key(other.organization)
    InvitationFactory(organization=other.organization)
    assert _ticks(owner) == dict.fromkeys(["upload", "ask", "model", "invite", "api_key"], False)

    DocumentFactory(organization=org)
    assert _ticks(owner)["upload"] is True
    LLMCall.all_orgs.create(organization=org, feature="ask", model_requested="local")
    assert _ticks(owner)["ask"] is True
    OrgProvider.all_orgs.create(organization=org, name="Mine", slug="mine", kind="openai")
    assert _ticks(owner)["model"] is True
    InvitationFactory(organization=org)
    assert _ticks(owner)["invite"] is True
    issue_key(org)
    assert _ticks(owner) == dict.fromkeys(["upload", "ask", "model", "invite", "api_key"], True)
    # Every step done: the checklist is not shown any more.
    assert overview.onboarding(org=org, principal=_principal(owner), membership=owner) is None


def test_a_second_member_ticks_the_invite_step_and_a_chat_call_is_not_an_ask():
    owner: Any = MembershipFactory(role="owner")
    LLMCall.all_orgs.create(organization=owner.organization, feature="chat", model_requested="local")
    assert _ticks(owner)["ask"] is False
    MembershipFactory(organization=owner.organization)
    assert _ticks(owner)["invite"] is True


def test_a_member_sees_links_only_to_what_they_may_do(client):
    member: Any = MembershipFactory(role="member")
    client.force_login(member.user)
    page = client.get(f"/o/{member.organization.slug}/").content.decode()
    assert 'id="checklist"' in page and 'id="load-samples"' in page
    assert f'href="/o/{member.organization.slug}/documents/"' in page
    assert f"/o/{member.organization.slug}/keys/" not in page  # admins create keys
    assert page.count("An admin of the team does this.") == 3  # model, invite, key


def test_the_checklist_is_dismissed_per_member(client):
    owner: Any = MembershipFactory(role="owner")
    mate: Any = MembershipFactory(organization=owner.organization, role="member")
    slug = owner.organization.slug
    client.force_login(owner.user)
    assert client.post(f"/o/{slug}/onboarding/dismiss/").status_code == 302
    assert 'id="checklist"' not in client.get(f"/o/{slug}/").content.decode()
    client.force_login(mate.user)
    assert 'id="checklist"' in client.get(f"/o/{slug}/").content.decode()  # still theirs
    client.force_login(owner.user)
    client.post(f"/o/{slug}/onboarding/dismiss/", {"show": "1"})
    assert 'id="checklist"' in client.get(f"/o/{slug}/").content.decode()


def test_samples_are_uploaded_through_the_document_service_and_ingested_for_real(client):
    sync_registry(ModelConfig)
    member: Any = MembershipFactory(role="member")
    org = member.organization
    client.force_login(member.user)
    response = client.post(f"/o/{org.slug}/samples/")
    assert response.status_code == 302
    collection = Collection.objects.for_org(org).get(name="Samples")
    loaded = list(Document.objects.for_org(org).filter(collection=collection).order_by("filename"))
    assert [d.filename for d in loaded] == [p.name for p in samples.sample_files()] == ["handbook.md", "pricing-faq.md"]
    assert all(d.uploaded_by_id == member.user_id and d.status == "queued" for d in loaded)
    # A second click adds nothing.
    client.post(f"/o/{org.slug}/samples/")
    assert Document.objects.for_org(org).count() == 2

    for document in loaded:
        ingestion.document_ingest(org_id=org.pk, document_id=document.pk)
    handbook = Document.objects.for_org(org).get(filename="handbook.md")
    assert handbook.status == "ready" and handbook.chunk_count > 1
    page = client.get(f"/o/{org.slug}/").content.decode()
    assert f"Northwind Studio: Team Handbook is ready: {handbook.chunk_count} passages" in page
    assert "document.progress" not in page


def test_a_viewer_cannot_load_samples(client):
    viewer: Any = MembershipFactory(role="viewer")
    client.force_login(viewer.user)
    assert client.post(f"/o/{viewer.organization.slug}/samples/").status_code == 403
    assert not Document.objects.for_org(viewer.organization).exists()


def test_activity_is_written_in_words_newest_first():
    owner: Any = MembershipFactory(role="owner")
    org = owner.organization
    now = timezone.now()
    DocumentFactory(organization=org, title="handbook.pdf", chunk_count=14, processed_at=now - timedelta(minutes=5))
    DocumentFactory(organization=org, title="scan.pdf", status="failed", failure_reason="No text in this PDF.",
                    processed_at=now - timedelta(minutes=4))  # fmt: skip
    RunFactory(
        organization=org,
        crew__name="Crew Weekly digest",
        status=Run.Status.SUCCEEDED,
        started_at=now - timedelta(minutes=3),
        finished_at=now - timedelta(minutes=3) + timedelta(seconds=42),
    )
    AuditEvent.all_orgs.create(organization=org, action="api_key.rotated", actor_label="ana@example.com",
                               target_label="CI key")  # fmt: skip
    texts = [item.text for item in overview.activity_list(org=org)]
    assert texts == [
        "API key rotated: CI key, by ana@example.com",
        "Crew Weekly digest finished in 42 s",
        "scan.pdf could not be read: No text in this PDF",
        "handbook.pdf is ready: 14 passages",
    ]
    other: Any = MembershipFactory()
    assert overview.activity_list(org=other.organization) == []


def test_the_activity_fragment_is_org_scoped(client):
    member: Any = MembershipFactory()
    DocumentFactory(organization=member.organization, title="ours.md")
    stranger: Any = MembershipFactory()
    DocumentFactory(organization=stranger.organization, title="theirs.md")
    client.force_login(member.user)
    body = client.get(f"/o/{member.organization.slug}/activity/").content.decode()
    assert "ours.md is ready" in body and "theirs.md" not in body
    assert client.get(f"/o/{stranger.organization.slug}/activity/").status_code == 404


# The Overview's queries, counted on a warm process: the session's user and membership (2), this period's usage
# totals (1), the team's facts for the checklist and header (1), the activity's documents, runs and events (3),
# the usage charts' days and features (2), the org switcher (1), the notification bell (2).
OVERVIEW_QUERIES = 12


@pytest.mark.parametrize("rows", [1, 3])
def test_the_overview_reads_in_a_fixed_number_of_queries_whatever_the_data(client, rows):
    owner: Any = MembershipFactory(role="owner")
    org = owner.organization
    for n in range(rows):
        DocumentFactory(organization=org, title=f"doc{n}.md")
        RunFactory(organization=org, crew__name=f"Crew {n}", status=Run.Status.SUCCEEDED)
        AuditEvent.all_orgs.create(organization=org, action="api_key.rotated", actor_label="a", target_label=f"k{n}")
        MembershipFactory(organization=org)
        InvitationFactory(organization=org)
    client.force_login(owner.user)
    client.get(f"/o/{org.slug}/")  # the first request fills the process's caches (plans, config)
    with CaptureQueriesContext(connection) as queries:
        page = client.get(f"/o/{org.slug}/")
    assert page.status_code == 200
    body = page.content.decode()
    assert f"{rows + 1} members" in body and f"Crew {rows - 1} finished" in body
    assert len(queries) == OVERVIEW_QUERIES, "\n".join(q["sql"][:200] for q in queries.captured_queries)
