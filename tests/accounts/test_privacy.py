"""GDPR: a person's export and erasure, an org's deletion, and an erasure killed midway then rerun, checked by
scanning every table, the file storage and Redis (tests/accounts/privacy_scan.py)."""

import dataclasses
import io
import json
import uuid
import zipfile
from dataclasses import dataclass
from typing import Any

import pytest
from django.apps import apps
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from accounts import erasure, exports, invitations, services
from accounts.models import ApiKey, AuditEvent, DataExport, ErasureRecord, Invitation, Membership, Organization, User
from accounts.permissions import principal_for_member
from agents import crew_runs
from agents import services as agents
from agents.models import Conversation, Crew, Feedback, Run
from analytics import rollups
from analytics.models import HourlyRollup
from billing.models import UsageEvent
from documents import ingestion
from documents.models import Chunk, Document
from saas.core import privacy as registry
from saas.core.redis import get_redis
from saas.llm import gateway
from saas.llm.gateway import exact_cache_prefix
from saas.llm.models import LLMCall, SemanticCacheEntry
from tests.accounts.factories import MembershipFactory, UserFactory
from tests.accounts.privacy_scan import scan_everywhere, scan_tables

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


@dataclass
class Person:
    user: User
    mark: str  # a string only their content holds
    client: APIClient

    @property
    def needles(self) -> list[str]:
        return [self.user.email, self.user.first_name, self.user.last_name, self.mark]


@dataclass
class World:
    org_a: Organization  # delete policy
    org_b: Organization
    alice: Person  # admin in A, member in B (joined by invitation)
    bob: Person  # owner of both


def _person(tag: str, name: str) -> Person:
    tag = f"{tag}{uuid.uuid4().hex[:4]}"  # the Redis and the media folder outlive a test session
    mark = f"zq{uuid.uuid4().hex[:12]}"
    user = UserFactory(email=f"{name}.{tag}@example.com", first_name=f"{name.title()}{tag}ine",
                       last_name=f"Quill{tag}feather")  # fmt: skip
    client = APIClient()
    client.force_login(user)  # a session in PostgreSQL and Redis (cached_db), and sign-in audit events
    return Person(user, mark, client)


def _call(person: Person, org: Organization, method: str, path: str, data: Any = None, **extra: Any) -> Any:
    response = getattr(person.client, method)(path, data, HTTP_X_CREWDESK_ORG=str(org.pk), **extra)
    assert response.status_code < 300, (path, response.status_code, response.content[:500])
    return response.json() if response.content else None


def _content(person: Person, org: Organization) -> None:
    """Something of the person in every store: a document (file, text, chunks, vectors), an answer from it
    (ledger, exact and semantic caches, usage), feedback, a chat, a crew and a run."""
    mark = person.mark
    note = f"# Launch notes {mark}\n\nThe {mark} launch of {org.slug} happens in May, after the review.\n".encode()
    upload = _call(person, org, "post", "/api/v1/documents",
                   {"file": SimpleUploadedFile(f"launch-{mark}.md", note)}, format="multipart")  # fmt: skip
    ingestion.document_ingest(org_id=org.pk, document_id=upload["id"])
    answer = _call(person, org, "post", "/api/v1/ask", {"question": f"When is the {mark} launch?"}, format="json")
    assert mark in answer["answer"], answer
    _call(person, org, "post", f"/api/v1/responses/{answer['id']}/feedback",
          {"rating": "up", "comment": f"Right about {mark}"}, format="json")  # fmt: skip
    conversation = agents.conversation_create(org=org, user=person.user)
    _, reply = agents.chat_turn_start(
        conversation=conversation, question=f"Remember {mark} for {org.slug}", model="auto"
    )
    caller = gateway.Caller(org=org, user=person.user)
    list(agents.chat_answer_stream(conversation=conversation, answer=reply, caller=caller, should_stop=lambda: False))
    _call(person, org, "post", f"/api/v1/messages/{reply.pk}/feedback", {"rating": "down", "comment": f"No {mark}"},
          format="json")  # fmt: skip
    crew = _call(person, org, "post", "/api/v1/crew-starters", {"starter": "research-brief"}, format="json")
    run = _call(person, org, "post", f"/api/v1/crews/{crew['id']}/runs", {"inputs": {"topic": f"the {mark} launch"}},
                format="json")  # fmt: skip
    assert crew_runs.run_execute(org_id=org.pk, run_id=run["id"]) in FINISHED  # failed when it found nothing


FINISHED = {"succeeded", "failed"}  # a run that found nothing to answer with fails (agents.engine)


def _other_content(person: Person, org: Organization) -> None:
    """The other member's own things, made from nothing of alice's (see the test on derived content)."""
    mark = person.mark
    conversation = agents.conversation_create(org=org, user=person.user)
    _, reply = agents.chat_turn_start(conversation=conversation, question=f"Plan {mark} for {org.slug}", model="auto")
    caller = gateway.Caller(org=org, user=person.user)
    list(agents.chat_answer_stream(conversation=conversation, answer=reply, caller=caller, should_stop=lambda: False))
    _call(person, org, "post", f"/api/v1/messages/{reply.pk}/feedback", {"rating": "up", "comment": f"Yes {mark}"},
          format="json")  # fmt: skip
    spec = {"name": f"Planner {mark} {org.slug}", "process": "sequential",
            "agents": [{"role": "planner", "goal": f"Plan the {mark} offsite."}],
            "tasks": [{"name": "plan", "agent": "planner", "description": "Plan the {topic}."}]}  # fmt: skip
    crew = _call(person, org, "post", "/api/v1/crews", spec, format="json")
    run = _call(person, org, "post", f"/api/v1/crews/{crew['id']}/runs", {"inputs": {"topic": f"{mark} offsite"}},
                format="json")  # fmt: skip
    assert crew_runs.run_execute(org_id=org.pk, run_id=run["id"]) in FINISHED  # failed when it found nothing


def build_world(tag: str) -> World:
    bob, alice = _person(tag, "bob"), _person(tag, "alice")
    tag = f"{tag}{uuid.uuid4().hex[:4]}"
    org_a = Organization.objects.create(name=f"Acme {tag}", slug=f"acme-{tag}")
    org_b = Organization.objects.create(name=f"Bravo {tag}", slug=f"bravo-{tag}")
    owner_a = MembershipFactory(organization=org_a, user=bob.user, role=Membership.Role.OWNER)
    owner_b = MembershipFactory(organization=org_b, user=bob.user, role=Membership.Role.OWNER)
    MembershipFactory(organization=org_a, user=alice.user, role=Membership.Role.ADMIN)
    issued = invitations.invitation_create(
        principal=principal_for_member(owner_b), email=alice.user.email, role="member"
    )
    invitations.invitation_accept(token=issued.token, user=alice.user)
    services.audit_record(org=org_a, action="member.note", principal=principal_for_member(owner_a),
                          target_label=f"{alice.user.get_full_name()} <{alice.user.email}>",
                          metadata={"about": alice.user.email})  # fmt: skip
    _call(alice, org_a, "post", "/api/v1/keys", {"name": f"{alice.user.first_name}'s laptop", "scopes": ["read"]},
          format="json")  # fmt: skip
    for org in (org_a, org_b):
        _content(alice, org)
        _other_content(bob, org)
    return World(org_a, org_b, alice, bob)


def _zip(response) -> dict[str, str]:
    data = b"".join(response.streaming_content)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name).decode("utf-8", "replace") for name in archive.namelist()}


def _org_rows(org_ids: list[Any]) -> dict[str, int]:
    """Rows per tenant table for these orgs."""
    counts = {}
    for model in apps.get_models():
        if any(f.name == "organization" for f in model._meta.fields):
            manager = getattr(model, "all_orgs", model._base_manager)
            counts[model._meta.label] = manager.filter(organization_id__in=org_ids).count()
    return counts


def _leave(person: Person, org: Organization) -> None:
    """They leave the org; what they made there stays there, and is still theirs to export and erase."""
    membership = Membership.all_orgs.get(organization=org, user=person.user)
    services.membership_remove(principal=principal_for_member(membership), membership_id=membership.pk)


def test_a_person_exports_their_data_and_nothing_of_anyone_else():
    world = build_world("ex")
    alice, bob = world.alice, world.bob
    _leave(alice, world.org_b)
    asked = alice.client.post("/api/v1/me/export")
    assert asked.status_code == 202, asked.content
    assert alice.client.post("/api/v1/me/export").json()["id"] == asked.json()["id"]  # one at a time
    exports.export_build(export_id=asked.json()["id"])
    listed = alice.client.get("/api/v1/me/exports").json()
    assert [e["status"] for e in listed] == ["ready"]
    download = alice.client.get(listed[0]["download_url"])
    assert download.status_code == 200 and download["Content-Type"] == "application/zip"
    files = _zip(download)
    everything = "\n".join(files.values())

    profile = json.loads(files["profile.json"])
    assert profile["email"] == alice.user.email
    assert {m["slug"] for m in profile["memberships"]} == {world.org_a.slug}  # and B, which she left:
    for org in (world.org_a, world.org_b):
        folder = f"orgs/{org.slug}"
        (document,) = json.loads(files[f"{folder}/documents.json"])
        assert alice.mark in document["extracted_text"]
        assert alice.mark.encode().decode() in files[f"{folder}/files/{document['id']}-launch-{alice.mark}.md"]
        (conversation,) = json.loads(files[f"{folder}/conversations.json"])
        assert alice.mark in conversation["messages"][0]["content"]
        assert {f["comment"] for f in json.loads(files[f"{folder}/feedback.json"])} == {
            f"Right about {alice.mark}", f"No {alice.mark}"}  # fmt: skip
        (run,) = json.loads(files[f"{folder}/crew_runs.json"])
        assert run["inputs"] == {"topic": f"the {alice.mark} launch"} and run["steps"]
        assert len(json.loads(files[f"{folder}/crews.json"])) == 1
        calls = json.loads(files[f"{folder}/ai_requests.json"])
        assert len(calls) == LLMCall.all_orgs.filter(organization=org, user=alice.user).count() >= 3
        assert any(alice.mark in call["input"] for call in calls)
        assert json.loads(files[f"{folder}/audit_events.json"])
    for needle in bob.needles:  # nothing of the other member, though they share both orgs
        assert needle.lower() not in everything.lower(), needle

    # Only its owner downloads it; requests and downloads are audited in each org of theirs.
    assert bob.client.get(listed[0]["download_url"]).status_code == 404
    for org in (world.org_a, world.org_b):
        actions = set(AuditEvent.all_orgs.filter(organization=org, action__startswith="user.export").values_list(
            "action", flat=True))  # fmt: skip
        assert actions == {"user.export_requested", "user.export_downloaded"}


def test_an_api_key_cannot_reach_personal_data():
    world = build_world("key")
    key = services.api_key_create(principal=principal_for_member(Membership.all_orgs.get(
        organization=world.org_a, user=world.bob.user)), name="ci", scopes=["read"])  # fmt: skip
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key.secret}")
    refused = client.post("/api/v1/me/export")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "user_required"
    assert client.post("/api/v1/me/delete", {"password": PASSWORD}, format="json").status_code == 403
    assert client.post("/api/v1/org/delete", {"password": PASSWORD, "confirm": world.org_a.slug},
                       format="json").status_code == 403  # fmt: skip
    assert Organization.objects.filter(pk=world.org_a.pk, deletion_requested_at__isnull=True).exists()


def test_erasing_a_person_leaves_no_trace_of_them_anywhere():
    world = build_world("er")
    alice, bob = world.alice, world.bob
    _leave(alice, world.org_b)  # what she left behind there is erased too
    assert scan_everywhere([alice.mark]), "the scan must see the content before erasure"
    # Her words in chats and crews (titles, comments, inputs, outputs) are there only encrypted.
    assert [hit for hit in scan_tables([alice.mark]) if hit.startswith("agents_")] == []
    # Alice also asked for an export, still on the storage when she leaves.
    exports.export_build(export_id=alice.client.post("/api/v1/me/export").json()["id"])
    bob_before = {
        "conversations": Conversation.all_orgs.filter(user=bob.user).count(),
        "documents": Document.all_orgs.filter(uploaded_by=bob.user).count(),
        "runs": Run.all_orgs.filter(started_by=bob.user).count(),
        "calls": LLMCall.all_orgs.filter(user=bob.user).exclude(input_encrypted="").count(),
        "feedback": Feedback.all_orgs.filter(user=bob.user).exclude(comment_encrypted="").count(),
    }
    usage_before = UsageEvent.all_orgs.count()

    wrong = alice.client.post("/api/v1/me/delete", {"password": "not it"}, format="json")
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "reauthentication_failed"
    asked = alice.client.post("/api/v1/me/delete", {"password": PASSWORD}, format="json")
    assert asked.status_code == 202, asked.content
    record = ErasureRecord.objects.get(pk=asked.json()["id"])
    user = User.objects.get(pk=alice.user.pk)
    assert not user.is_active and not user.has_usable_password()  # access ends before the job runs
    assert ApiKey.all_orgs.filter(created_by=user, revoked_at__isnull=True).count() == 0

    erasure.erasure_run(record_id=record.pk)

    record.refresh_from_db()
    assert record.status == "done" and record.finished_at is not None
    assert record.counts["agents"] >= 6 and record.counts["documents"] == 2 and record.counts["ledger"] >= 6
    assert record.counts["account"] >= 1 and json.dumps(record.counts).isascii()
    assert not User.objects.filter(pk=alice.user.pk).exists()
    assert scan_everywhere(alice.needles) == []

    # What had to stay stays, without her: ledger rows (the bill), feedback ratings, audit events.
    pseudonym = erasure.pseudonym(alice.user.pk)
    assert AuditEvent.all_orgs.filter(actor_label=pseudonym, actor_user__isnull=True, ip__isnull=True).exists()
    assert AuditEvent.all_orgs.filter(target_id=str(alice.user.pk), target_label=pseudonym).exists()
    assert Feedback.all_orgs.filter(user__isnull=True, comment_encrypted="", llm_call__isnull=False).count() == 2
    assert LLMCall.all_orgs.filter(user__isnull=True, input_encrypted="", output_encrypted="").exists()
    assert UsageEvent.all_orgs.count() == usage_before
    # Bob's things are all there.
    assert bob_before == {
        "conversations": Conversation.all_orgs.filter(user=bob.user).count(),
        "documents": Document.all_orgs.filter(uploaded_by=bob.user).count(),
        "runs": Run.all_orgs.filter(started_by=bob.user).count(),
        "calls": LLMCall.all_orgs.filter(user=bob.user).exclude(input_encrypted="").count(),
        "feedback": Feedback.all_orgs.filter(user=bob.user).exclude(comment_encrypted="").count(),
    }
    assert scan_everywhere([bob.mark]), "bob's content is still there"
    assert erasure.erasure_run(record_id=record.pk) is None  # done is done


def test_a_sole_owner_must_hand_the_org_on_first():
    world = build_world("so")
    refused = world.bob.client.post("/api/v1/me/delete", {"password": PASSWORD}, format="json")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "sole_owner"
    assert set(refused.json()["error"]["details"]["orgs"]) == {world.org_a.slug, world.org_b.slug}
    assert User.objects.get(pk=world.bob.user.pk).is_active and not ErasureRecord.objects.exists()


def test_an_org_that_keeps_member_content_gets_it_without_the_member():
    world = build_world("tr")
    Organization.objects.filter(pk=world.org_b.pk).update(member_content_on_erasure="transfer")
    alice = world.alice
    record = erasure.account_erase_request(user=alice.user, password=PASSWORD)
    erasure.erasure_run(record_id=record.pk)
    # Kept in B (the team's now), deleted in A; her chats go everywhere (they were private to her).
    assert Document.all_orgs.filter(organization=world.org_b, uploaded_by__isnull=True).count() == 1
    assert Crew.all_orgs.filter(organization=world.org_b, created_by__isnull=True).count() == 1
    assert Run.all_orgs.filter(organization=world.org_b, started_by__isnull=True).count() == 1
    assert not Document.all_orgs.filter(organization=world.org_a).exists()
    assert not Crew.all_orgs.filter(organization=world.org_a, created_by__isnull=True).exists()
    assert list(Conversation.all_orgs.filter(organization=world.org_b).values_list("user", flat=True)) == [
        world.bob.user.pk]  # fmt: skip
    identity = [alice.user.email, alice.user.first_name, alice.user.last_name]
    assert scan_everywhere(identity) == []


def test_deleting_an_org_erases_it_everywhere_and_nothing_else():
    world = build_world("od")
    other = build_world("ok")  # another org pair, untouched
    owner = world.bob
    org = world.org_a
    exports.export_build(export_id=owner.client.post("/api/v1/org/export", HTTP_X_CREWDESK_ORG=str(org.pk))
                         .json()["id"])  # fmt: skip
    # A member's personal export holds a folder of the org too.
    exports.export_build(export_id=world.alice.client.post("/api/v1/me/export").json()["id"])
    get_redis().set(f"crewdesk:quota:{org.pk}:202611010000:used", 5)
    assert list(get_redis().scan_iter(match=exact_cache_prefix(org.pk) + "*"))
    assert SemanticCacheEntry.all_orgs.filter(organization=org).exists()
    rollups.rollup_hours(org_ids=[org.pk, world.org_b.pk])  # the dashboards' figures
    assert HourlyRollup.all_orgs.filter(organization=org).exists()
    untouched_ids = [world.org_b.pk, other.org_a.pk, other.org_b.pk]
    before = _org_rows(untouched_ids)
    users_before = User.objects.count()

    refused = owner.client.post("/api/v1/org/delete", {"password": PASSWORD, "confirm": "wrong"}, format="json",
                                HTTP_X_CREWDESK_ORG=str(org.pk))  # fmt: skip
    assert refused.status_code == 400 and "confirm" in refused.json()["error"]["details"]["fields"]
    admin = world.alice  # an admin is not an owner
    assert admin.client.post("/api/v1/org/delete", {"password": PASSWORD, "confirm": org.slug}, format="json",
                             HTTP_X_CREWDESK_ORG=str(org.pk)).status_code == 403  # fmt: skip
    asked = owner.client.post("/api/v1/org/delete", {"password": PASSWORD, "confirm": org.slug}, format="json",
                              HTTP_X_CREWDESK_ORG=str(org.pk))  # fmt: skip
    assert asked.status_code == 202, asked.content
    # Gone for everyone at once, before the job runs.
    assert owner.client.get("/api/v1/org", HTTP_X_CREWDESK_ORG=str(org.pk)).status_code == 404
    assert admin.client.get(f"/o/{org.slug}/").status_code == 404

    erasure.erasure_run(record_id=asked.json()["id"])

    record = ErasureRecord.objects.get(pk=asked.json()["id"])
    assert record.status == "done" and record.counts["documents"] >= 2 and record.counts["cache"] >= 1
    assert not Organization.objects.filter(pk=org.pk).exists()
    assert set(_org_rows([org.pk]).values()) == {0}
    assert not Chunk.all_orgs.filter(organization_id=org.pk).exists()
    assert not HourlyRollup.all_orgs.filter(organization_id=org.pk).exists()
    org_needles = [org.slug, org.name, str(org.pk)]  # its content names it (tests/accounts/test_privacy._content)
    leftovers = scan_everywhere(org_needles)
    # Only the erasure record names the org, by its id: what was erased, counted, no content.
    assert leftovers == [line for line in leftovers if line.startswith("accounts_erasurerecord:")]
    assert len(leftovers) == 1
    assert _org_rows(untouched_ids) == before and User.objects.count() == users_before
    assert scan_everywhere([other.alice.mark, other.bob.mark])


def test_a_killed_erasure_rerun_ends_in_the_same_state():
    """Two identical worlds: one erased in one go, the other killed in the middle of a store and rerun."""
    clean, killed = build_world("k1"), build_world("k2")
    first = erasure.account_erase_request(user=clean.alice.user, password=PASSWORD)
    erasure.erasure_run(record_id=first.pk, batch_size=1)

    second = erasure.account_erase_request(user=killed.alice.user, password=PASSWORD)
    stores = registry._stores
    (agents_store,) = [s for s in stores if s.name == "agents"]
    position = stores.index(agents_store)
    erase = agents_store.erase_user
    assert erase is not None
    batches = {"n": 0}

    def dies_after_three_batches(**kwargs: Any) -> int:
        batches["n"] += 1
        if batches["n"] > 3:
            raise SystemExit("worker killed")
        return erase(**kwargs)

    stores[position] = dataclasses.replace(agents_store, erase_user=dies_after_three_batches)
    try:
        with pytest.raises(SystemExit):
            erasure.erasure_run(record_id=second.pk, batch_size=1)
    finally:
        stores[position] = agents_store
    second.refresh_from_db()
    assert second.status == "running" and second.counts == {"agents": 3}
    assert User.objects.filter(pk=killed.alice.user.pk).exists()

    erasure.erasure_run(record_id=second.pk, batch_size=1)  # the rerun (the beat starts it; here by hand)
    first.refresh_from_db()
    second.refresh_from_db()
    assert second.status == "done" and second.runs == 2
    clockless = "rate limit counters"  # per-minute windows: how many there are depends on the clock
    assert {**second.counts, clockless: 0} == {**first.counts, clockless: 0}
    assert _org_rows([killed.org_a.pk, killed.org_b.pk]) == _org_rows([clean.org_a.pk, clean.org_b.pk])
    assert scan_everywhere(killed.alice.needles) == []
    assert Invitation.all_orgs.filter(email=killed.alice.user.email).count() == 0
    assert DataExport.objects.filter(user_id=killed.alice.user.pk).count() == 0
