"""A team with a real handbook (uploaded and ingested for real), an admin, and a member who asked a question
and gave it a thumbs-down with a comment: what the eval tests start from."""

from dataclasses import dataclass
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts import permissions
from accounts.models import Membership
from agents.models import Feedback
from documents import ingestion
from documents.models import Document
from tests.accounts.conftest import issue_key, key_client, make_member, session_client  # noqa: F401  (fixtures)
from tests.accounts.factories import MembershipFactory, OrganizationFactory
from tests.documents import files

HANDBOOK = [
    "Welcome to the Acme handbook. It explains how the company works.",
    "Travel expenses are reimbursed within 14 days of the trip report.",
    "Refunds take 30 days from the purchase date. Customers receive an email when the refund is sent.",
]
OFFICE = b"# Office\n\nThe office opens at 8 am.\n\n## Parking\n\nParking is free for staff in the north lot.\n"


@dataclass
class Team:
    org: Any
    admin: Membership
    member: Membership
    asker: Any  # the member's API client (session)
    handbook: Document
    office: Document

    @property
    def principal(self) -> permissions.Principal:
        return permissions.principal_for_member(self.admin)

    def thumbs_down(self, question: str, comment: str) -> Feedback:
        answer = self.asker.post("/api/v1/ask", {"question": question}, format="json")
        assert answer.status_code == 200, answer.content
        rated = self.asker.post(f"/api/v1/responses/{answer.json()['id']}/feedback",
                                {"rating": "down", "comment": comment}, format="json")  # fmt: skip
        assert rated.status_code == 201, rated.content
        return Feedback.all_orgs.get(pk=rated.json()["id"])


def upload(org, name: str, data: bytes) -> Document:
    client = key_client(issue_key(org, scopes=["read", "documents:write"]).secret)
    response = client.post("/api/v1/documents", {"file": SimpleUploadedFile(name, data)}, format="multipart")
    assert response.status_code == 202, response.content
    ingested = ingestion.document_ingest(org_id=org.pk, document_id=response.json()["id"])
    assert ingested is not None
    return ingested


@pytest.fixture
def team(db, session_client) -> Team:  # noqa: F811
    org = OrganizationFactory()
    admin = MembershipFactory(organization=org, role=Membership.Role.ADMIN)
    member = MembershipFactory(organization=org, role=Membership.Role.MEMBER)
    handbook = upload(org, "handbook.pdf", files.pdf(HANDBOOK))
    office = upload(org, "office.md", OFFICE)
    assert handbook.status == Document.Status.READY and office.status == Document.Status.READY
    return Team(org, admin, member, session_client(member.user), handbook, office)
