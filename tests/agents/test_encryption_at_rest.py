"""Personal text of chats and crews is encrypted at rest: conversation titles, feedback comments, the inputs of
crews' schedules and of runs, and runs' errors. The database holds only ciphertext (read back with raw SQL), the
API and the pages show the plaintext, and the migration encrypts the rows written before it (and reverses)."""

import hashlib
import importlib
import json
import uuid

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from agents import crew_runs, privacy, services
from agents.models import Conversation, Crew, Feedback, Message, Run, RunStep
from saas.core import crypto
from saas.core.privacy import Subject
from saas.llm.models import LLMCall
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import MembershipFactory, OrganizationFactory, UserFactory
from tests.agents.factories import FeedbackFactory

MIGRATION = importlib.import_module("agents.migrations.0004_encrypt_personal_text")
BEFORE = [("agents", "0003_crews")]


def _latest() -> list[tuple[str, str]]:
    """Every app's newest migration: where the schema is after the migration under test (and must be left)."""
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


# Each encrypted column of this change: (table, column).
COLUMNS = [
    ("agents_conversation", "title_encrypted"),
    ("agents_message", "error_encrypted"),
    ("agents_feedback", "comment_encrypted"),
    ("agents_crew", "schedule_inputs_encrypted"),
    ("agents_run", "inputs_encrypted"),
    ("agents_run", "error_encrypted"),
    ("agents_runstep", "data_encrypted"),
]


def _raw(table: str, column: str, pk) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT "{column}" FROM "{table}" WHERE id = %s', [pk])  # noqa: S608
        return cursor.fetchone()[0]


def _agents_rows_holding(needle: str) -> list[str]:
    """Every row of every agents table, as text, that holds `needle` in clear."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE "
                       "'agents\\_%%' ORDER BY tablename")  # fmt: skip
        tables = [row[0] for row in cursor.fetchall()]
        assert "agents_run" in tables and "agents_feedback" in tables
        found = []
        for table in tables:
            cursor.execute(f'SELECT t::text FROM "{table}" t WHERE t::text ILIKE %s', [f"%{needle}%"])  # noqa: S608
            found += [f"{table}: {row[0][:200]}" for row in cursor.fetchall()]
    return found


@pytest.mark.django_db
def test_personal_text_is_ciphertext_in_the_database_and_plaintext_in_the_app(session_client):
    mark = f"zq{uuid.uuid4().hex[:12]}"
    member = MembershipFactory(role="admin")
    org = member.organization
    client = session_client(member.user)
    client.credentials(HTTP_X_CREWDESK_ORG=str(org.pk))

    conversation = services.conversation_create(org=org, user=member.user)
    _, answer = services.chat_turn_start(conversation=conversation, question=f"Call {mark} back", model="auto")
    rated = client.post(f"/api/v1/messages/{answer.pk}/feedback", {"rating": "down", "comment": f"Not {mark}"},
                        format="json")  # fmt: skip
    assert rated.status_code == 201 and rated.json()["comment"] == f"Not {mark}"
    crew = client.post("/api/v1/crews", {
        "name": "Digest", "default_model": "local",
        "schedule": {"cron": "0 8 * * 1", "enabled": True, "inputs": {"topic": f"scheduled {mark}"}},
        "agents": [{"role": "writer", "goal": "Write."}],
        "tasks": [{"name": "digest", "agent": "writer", "description": "Summarise {topic}."}],
    }, format="json")  # fmt: skip
    assert crew.status_code == 201, crew.content
    started = client.post(f"/api/v1/crews/{crew.json()['id']}/runs", {"inputs": {"topic": f"run {mark}"}},
                          format="json")  # fmt: skip
    assert started.status_code == 202, started.content
    # it runs to its end (failed when the offline engine found nothing to quote: either way, steps and output kept)
    outcome = crew_runs.run_execute(org_id=org.pk, run_id=started.json()["id"])
    assert outcome in {"succeeded", "failed"}
    run = Run.all_orgs.get(pk=started.json()["id"])
    run.error_code, run.error = "invalid_output", f"'{mark}' is not of type 'integer'"  # as a schema check says
    run.save(update_fields=["error_code", "error_encrypted"])
    answer.status, answer.error = "error", f"The model provider refused the request (400): {mark}"
    answer.save(update_fields=["status", "error_encrypted"])
    feedback = Feedback.all_orgs.get()

    # The database: ciphertext under the key in force, nothing of the mark in any agents row.
    plain = {
        ("agents_conversation", "title_encrypted"): (conversation.pk, f"Call {mark} back"),
        ("agents_message", "error_encrypted"): (answer.pk, f"The model provider refused the request (400): {mark}"),
        ("agents_feedback", "comment_encrypted"): (feedback.pk, f"Not {mark}"),
        ("agents_crew", "schedule_inputs_encrypted"): (crew.json()["id"], f'{{"topic": "scheduled {mark}"}}'),
        ("agents_run", "inputs_encrypted"): (run.pk, f'{{"topic": "run {mark}"}}'),
        ("agents_run", "error_encrypted"): (run.pk, f"'{mark}' is not of type 'integer'"),
    }
    assert set(plain) | {("agents_runstep", "data_encrypted")} == set(COLUMNS)
    for (table, column), (pk, text) in plain.items():
        raw = _raw(table, column, pk)
        assert raw and mark not in raw and crypto.is_current(raw), (table, column, raw)
        assert crypto.decrypt(raw) == text, (table, column)
    with connection.cursor() as cursor:
        cursor.execute("SELECT data_encrypted FROM agents_runstep WHERE run_id = %s ORDER BY seq", [run.pk])
        step_data = [row[0] for row in cursor.fetchall()]
    written = [raw for raw in step_data if raw]  # a plan or an output step has no data
    assert written and all(crypto.is_current(raw) and "model" not in raw for raw in written)
    assert _agents_rows_holding(mark) == []  # nor a copy elsewhere (a run's frozen definition, the schedule)

    # The app: the plaintext, in the API and on the pages.
    assert client.get(f"/api/v1/crews/{crew.json()['id']}").json()["schedule"]["inputs"] == {
        "topic": f"scheduled {mark}"}  # fmt: skip
    body = client.get(f"/api/v1/runs/{run.pk}").json()
    assert body["inputs"] == {"topic": f"run {mark}"}
    assert body["error"] == {"code": "invalid_output", "message": f"'{mark}' is not of type 'integer'"}
    assert [step["data"] for step in body["steps"]] == [crypto.decrypt_json(raw) for raw in step_data]
    assert any(step["data"].get("model") == "local" for step in body["steps"])
    client.force_login(member.user)
    assert f"Call {mark} back" in client.get(f"/o/{org.slug}/chat/").content.decode()
    chat_page = client.get(f"/o/{org.slug}/chat/{conversation.pk}/").content.decode()
    assert f"Call {mark} back" in chat_page and f"refused the request (400): {mark}" in chat_page
    assert f"run {mark}" in client.get(f"/o/{org.slug}/runs/{run.pk}/").content.decode()
    assert mark in client.get(f"/o/{org.slug}/crews/{crew.json()['id']}/").content.decode()  # the run's error
    # The engine filled the task from the decrypted inputs; a scheduled run starts with the schedule's.
    prompts = [crypto.decrypt(c.input_encrypted) for c in LLMCall.all_orgs.filter(trace_id=str(run.pk))]
    assert any(f"Summarise run {mark}." in prompt for prompt in prompts), prompts
    assert Crew.all_orgs.get(pk=crew.json()["id"]).schedule_inputs == {"topic": f"scheduled {mark}"}


@pytest.mark.django_db
def test_a_retried_start_is_still_recognised_by_its_keyed_hash(db):
    org = OrganizationFactory()
    client = key_client(issue_key(org, scopes=["read", "crews:run"]).secret)
    crew = client.post("/api/v1/crews", {
        "name": "Digest", "default_model": "local", "agents": [{"role": "writer", "goal": "Write."}],
        "tasks": [{"name": "digest", "agent": "writer", "description": "Summarise {topic}."}],
    }, format="json").json()  # fmt: skip
    url, key = f"/api/v1/crews/{crew['id']}/runs", {"HTTP_IDEMPOTENCY_KEY": "k1"}
    first = client.post(url, {"inputs": {"topic": "refunds"}}, format="json", **key)
    again = client.post(url, {"inputs": {"topic": "refunds"}}, format="json", **key)
    other = client.post(url, {"inputs": {"topic": "returns"}}, format="json", **key)
    assert first.status_code == 202 and again.json()["id"] == first.json()["id"] and other.status_code == 409
    run = Run.all_orgs.get(pk=first.json()["id"])
    unkeyed = hashlib.sha256(json.dumps([crew["id"], {"topic": "refunds"}], sort_keys=True).encode()).hexdigest()
    assert run.request_hash and run.request_hash != unkeyed  # a guess of the inputs cannot be confirmed


@pytest.mark.django_db
def test_erasing_a_persons_feedback_blanks_the_encrypted_comment():
    feedback = FeedbackFactory(comment="My words", user=UserFactory())
    assert feedback.comment_encrypted and Feedback.all_orgs.get().comment == "My words"
    subject = Subject(
        user_id=feedback.user_id, org_id=feedback.organization_id, pseudonym="someone", texts=(), transfer_content=False
    )
    while privacy.erase_user(subject=subject, batch_size=10):
        pass
    kept = Feedback.all_orgs.get()
    assert (kept.user_id, kept.comment_encrypted, kept.comment, kept.rating) == (None, "", "", 1)


@pytest.mark.django_db(transaction=True)
def test_the_migration_encrypts_rows_written_in_clear_and_reverses(monkeypatch):
    """Rows written by the schema before it (clear columns), encrypted by the migration in batches of two;
    migrating back restores the clear columns."""
    org, user = OrganizationFactory(), UserFactory()
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    try:
        old = executor.loader.project_state(BEFORE).apps
        OldConversation, OldMessage = old.get_model("agents", "Conversation"), old.get_model("agents", "Message")
        OldFeedback, OldCrew, OldRun = (old.get_model("agents", name) for name in ("Feedback", "Crew", "Run"))
        base = {"organization_id": org.pk}
        conversations = [OldConversation.all_orgs.create(**base, user_id=user.pk, title=f"Old title {i}")
                         for i in range(5)]  # fmt: skip
        untitled = OldConversation.all_orgs.create(**base, user_id=user.pk, title="")
        message = OldMessage.all_orgs.create(**base, conversation=conversations[0], role="assistant",
                                             status="error", error="Old refusal")  # fmt: skip
        feedback = OldFeedback.all_orgs.create(**base, message=message, rating=-1, comment="Old comment")
        crew = OldCrew.all_orgs.create(**base, name="Digest", schedule_inputs={"topic": "old schedule input"})
        definition = {"name": "Digest", "agents": [], "tasks": [], "schedule": {"inputs": {"topic": "copy"}}}
        run = OldRun.all_orgs.create(**base, crew=crew, definition=definition, inputs={"topic": "old run input"},
                                     error="Old error", error_code="x", idempotency_key="k",
                                     request_hash="ab")  # fmt: skip
        bare = OldRun.all_orgs.create(**base, crew=crew, definition={"name": "Digest"})
        OldStep = old.get_model("agents", "RunStep")
        cited = {"citations": [{"title": "Old report", "heading": "old heading"}]}
        step = OldStep.all_orgs.create(**base, run=run, seq=1, kind="tool_result", data=cited)
        empty_step = OldStep.all_orgs.create(**base, run=run, seq=2, kind="message", data={})

        monkeypatch.setattr(MIGRATION, "BATCH", 2)
        executor = MigrationExecutor(connection)
        executor.migrate(_latest())  # the migration under test and those after it: the models as they are now

        assert [Conversation.all_orgs.get(pk=c.pk).title for c in conversations] == [
            f"Old title {i}" for i in range(5)]  # fmt: skip
        assert Conversation.all_orgs.get(pk=untitled.pk).title_encrypted == ""
        assert Feedback.all_orgs.get(pk=feedback.pk).comment == "Old comment"
        assert Message.all_orgs.get(pk=message.pk).error == "Old refusal"
        assert Crew.all_orgs.get(pk=crew.pk).schedule_inputs == {"topic": "old schedule input"}
        migrated = Run.all_orgs.get(pk=run.pk)
        assert (migrated.inputs, migrated.error) == ({"topic": "old run input"}, "Old error")
        assert "schedule" not in migrated.definition
        assert migrated.request_hash == crew_runs.run_request_hash(crew.pk, {"topic": "old run input"})
        assert (Run.all_orgs.get(pk=bare.pk).inputs_encrypted, Run.all_orgs.get(pk=bare.pk).request_hash) == ("", "")
        assert RunStep.all_orgs.get(pk=step.pk).data == cited
        assert RunStep.all_orgs.get(pk=empty_step.pk).data_encrypted == ""
        for table, column in COLUMNS:
            with connection.cursor() as cursor:
                cursor.execute(f'SELECT "{column}" FROM "{table}" WHERE "{column}" <> %s', [""])  # noqa: S608
                values = [row[0] for row in cursor.fetchall()]
            assert values and all(crypto.is_encrypted(v) for v in values)  # Fernet tokens, nothing in clear
            clear = column.removesuffix("_encrypted")
            with connection.cursor() as cursor:
                columns = [c.name for c in connection.introspection.get_table_description(cursor, table)]
            assert clear not in columns  # the clear column is gone

        executor = MigrationExecutor(connection)
        executor.migrate(BEFORE)  # and back
        old = executor.loader.project_state(BEFORE).apps
        assert old.get_model("agents", "Conversation").all_orgs.get(pk=conversations[3].pk).title == "Old title 3"
        assert old.get_model("agents", "Feedback").all_orgs.get(pk=feedback.pk).comment == "Old comment"
        assert old.get_model("agents", "Message").all_orgs.get(pk=message.pk).error == "Old refusal"
        assert old.get_model("agents", "Crew").all_orgs.get(pk=crew.pk).schedule_inputs == {
            "topic": "old schedule input"}  # fmt: skip
        reversed_run = old.get_model("agents", "Run").all_orgs.get(pk=run.pk)
        assert (reversed_run.inputs, reversed_run.error) == ({"topic": "old run input"}, "Old error")
        assert old.get_model("agents", "RunStep").all_orgs.get(pk=step.pk).data["citations"][0]["title"] == "Old report"
    finally:
        MigrationExecutor(connection).migrate(_latest())  # never leave the next tests an old schema
