"""Deleting a team: the resumable erasure job against a plain cascade, side by side in one run.

Builds identical orgs (documents with files, chunks with vectors, ledger rows, conversations and messages, audit
events, usage rows), then erases them alternately with the job (`accounts.erasure.erasure_run`: store by
store, batches of 200, each committing with its count, audit maintenance, Redis keys, files) and with the
baseline a naive implementation would use (files deleted, then `Organization.delete()`, one transaction
cascading through every table). Prints seconds per org and rows per second for both.

    python bench/erasure.py [--orgs 3] [--rows 2000]
"""

import argparse
import random
import statistics
import time
import uuid

from stack import bench_stack


def _build(rows: int):
    from django.core.files.base import ContentFile

    from accounts.models import AuditEvent, Membership, Organization, User
    from agents.models import Conversation, Message
    from billing.models import UsageEvent
    from documents.models import Chunk, Collection, Document
    from saas.core import crypto
    from saas.llm.models import LLMCall

    tag = uuid.uuid4().hex[:8]
    org = Organization.objects.create(name=f"Bench {tag}", slug=f"bench-{tag}")
    user = User.objects.create_user(email=f"bench-{tag}@example.com", password=None)
    Membership.all_orgs.create(organization=org, user=user, role="owner")
    collection = Collection.all_orgs.create(organization=org, name="Default", is_default=True)
    text = crypto.encrypt("A passage of a contract that mentions the renewal terms and the payment schedule.")
    documents = []
    for n in range(max(1, rows // 40)):
        document = Document(organization=org, collection=collection, title=f"doc {n}", filename=f"doc-{n}.md",
                            kind="markdown", size_bytes=64, sha256=uuid.uuid4().hex * 2, status="ready",
                            text_encrypted=text, uploaded_by=user)  # fmt: skip
        document.file.save(f"doc-{n}.md", ContentFile(b"# Notes\n\nThe renewal terms.\n"), save=False)
        documents.append(document)
    Document.all_orgs.bulk_create(documents)
    Chunk.all_orgs.bulk_create([
        Chunk(organization=org, document=documents[n % len(documents)], collection=collection, position=n,
              text_encrypted=text, token_count=20, embedding=[random.random() for _ in range(384)],  # noqa: S311
              search_vector="renewal:1 term:2")
        for n in range(rows // 4)
    ])  # fmt: skip
    calls = LLMCall.all_orgs.bulk_create([
        LLMCall(organization=org, user=user, model_requested="local", input_encrypted=text, output_encrypted=text)
        for _ in range(rows)
    ])  # fmt: skip
    UsageEvent.all_orgs.bulk_create([
        UsageEvent(organization=org, llm_call=call, kind="request", feature="chat", period_start=call.created_at)
        for call in calls
    ])  # fmt: skip
    conversation = Conversation.all_orgs.create(organization=org, user=user)
    Message.all_orgs.bulk_create([Message(organization=org, conversation=conversation, role="user",
                                          content_encrypted=text) for _ in range(rows // 4)])  # fmt: skip
    AuditEvent.all_orgs.bulk_create([AuditEvent(organization=org, actor_user=user, actor_label=user.email,
                                                action="bench.event") for _ in range(rows // 4)])  # fmt: skip
    return org, user


def _rows(org_id) -> int:
    from django.apps import apps

    return sum(model._base_manager.filter(organization_id=org_id).count() for model in apps.get_models()
               if any(f.name == "organization" for f in model._meta.fields))  # fmt: skip


def _job(org, user) -> None:
    from accounts import erasure
    from accounts.models import Membership
    from accounts.permissions import principal_for_member

    owner = principal_for_member(Membership.all_orgs.get(organization=org, user=user))
    record = erasure.organization_erase_request(principal=owner, confirm=org.slug, password="")
    erasure.erasure_run(record_id=record.pk)


def _cascade(org, user) -> None:
    from django.db import connection, transaction

    from accounts.models import Organization
    from documents.models import Document

    with transaction.atomic():
        with connection.cursor() as cursor:  # the audit log's trigger refuses deletes otherwise
            cursor.execute("SET LOCAL crewdesk.audit_maintenance = 'on'")
        for document in Document.all_orgs.filter(organization=org):
            document.file.storage.delete(document.file.name)
        Organization.objects.filter(pk=org.pk).delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", type=int, default=3, help="orgs erased by each method")
    parser.add_argument("--rows", type=int, default=2000, help="ledger rows per org (the other tables scale)")
    args = parser.parse_args()
    with bench_stack():
        from accounts import erasure

        erasure._check_password = lambda user, password, what: None  # the bench has no passwords to type
        results: dict[str, list[tuple[float, int]]] = {"erasure job": [], "plain cascade": []}
        for _ in range(args.orgs):
            for method, erase in (("erasure job", _job), ("plain cascade", _cascade)):
                org, user = _build(args.rows)
                rows = _rows(org.pk)
                started = time.perf_counter()
                erase(org, user)
                elapsed = time.perf_counter() - started
                assert _rows(org.pk) == 0, f"{method} left rows"
                results[method].append((elapsed, rows))
        print(f"{'method':<16}{'rows per org':>14}{'s per org (median)':>20}{'rows/s':>10}")
        for method, runs in results.items():
            seconds = statistics.median(s for s, _ in runs)
            rows = runs[0][1]
            print(f"{method:<16}{rows:>14}{seconds:>20.2f}{rows / seconds:>10.0f}")
        job, cascade = (statistics.median(s for s, _ in results[m]) for m in results)
        print(
            f"the job takes {job / cascade:.1f}x the cascade's time: the price of batches that commit, count and "
            "can be resumed"
        )


if __name__ == "__main__":
    main()
