"""Prompts as versioned data: the resolver, immutability, labels, the gate hook, and what the gateway records."""

import pytest
from django.db import IntegrityError, transaction

from saas.llm import prompt_experiments, prompts
from saas.llm.models import ExperimentVariant, Prompt, PromptVersion
from saas.llm.prompt_defaults import BUILTINS
from saas.llm.prompt_models import VersionImmutable
from tests.accounts.factories import OrganizationFactory

pytestmark = pytest.mark.django_db


def test_builtin_defaults_are_seeded_as_version_one():
    for key, builtin in BUILTINS.items():
        prompt = Prompt.all_orgs.get(organization__isnull=True, key=key)
        assert prompt.production.number == 1
        assert prompt.production.text == builtin.text


def test_org_override_beats_default_and_other_orgs_keep_the_default():
    org, other = OrganizationFactory(), OrganizationFactory()
    version = prompts.prompt_version_create(org=org, key="ask.system", text="Answer briefly. Cite [n].")
    assert prompts.prompt_resolve(org=org, key="ask.system").text == BUILTINS["ask.system"].text  # no label yet
    prompts.prompt_label_set(org=org, version=version)
    resolved = prompts.prompt_resolve(org=org, key="ask.system")
    assert (resolved.text, resolved.version_id, resolved.source) == ("Answer briefly. Cite [n].", version.pk, "org")
    assert prompts.prompt_resolve(org=other, key="ask.system").source == "default"
    with pytest.raises(prompts.NotFound):  # another org's version cannot be labelled here
        prompts.prompt_label_set(org=other, version=version)


def test_a_version_cannot_be_edited():
    org = OrganizationFactory()
    version = prompts.prompt_version_create(org=org, key="chat.system", text="Be kind.")
    version.text = "Be rude."
    with pytest.raises(VersionImmutable):
        version.save()
    with pytest.raises(IntegrityError), transaction.atomic():  # the trigger, for writes around the ORM
        PromptVersion.all_orgs.filter(pk=version.pk).update(text="Be rude.")
    version.refresh_from_db()
    assert version.text == "Be kind."


def test_crew_agent_role_falls_back_on_the_generic_agent_prompt():
    org = OrganizationFactory()
    assert prompts.prompt_resolve(org=org, key="crew.agent.writer").key == "crew.agent"
    version = prompts.prompt_version_create(org=org, key="crew.agent.writer", text="You write, {role}.")
    prompts.prompt_label_set(org=org, version=version)
    resolved = prompts.prompt_resolve(org=org, key="crew.agent.writer")
    assert resolved.key == "crew.agent.writer" and resolved.render(role="writer") == "You write, writer."
    assert prompts.prompt_resolve(org=org, key="crew.agent.editor").key == "crew.agent"


def test_promotion_check_can_refuse_production():
    org = OrganizationFactory()
    version = prompts.prompt_version_create(org=org, key="ask.system", text="Worse.")

    def gate(*, org, version, principal):
        raise prompts.PromotionRefused("Scores dropped.", details={"dataset": "x"})

    prompts._promotion_checks.append(gate)
    try:
        with pytest.raises(prompts.PromotionRefused):
            prompts.prompt_label_set(org=org, version=version)
        prompts.prompt_label_set(org=org, version=version, label="staging")  # staging is not gated
    finally:
        prompts._promotion_checks.remove(gate)
    assert prompts.prompt_resolve(org=org, key="ask.system").source == "default"
    assert prompts.prompt_resolve(org=org, key="ask.system", label="staging").version_id == version.pk


def test_one_default_per_key():
    with pytest.raises(IntegrityError), transaction.atomic():
        Prompt.all_orgs.create(key="ask.system")


# --- What the gateway records, and what the caches key on ----------------------------------------------------


@pytest.fixture
def library(db):
    """An org with one document, asked through the API (the offline engine answers)."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from documents import ingestion
    from tests.accounts.conftest import issue_key, key_client

    org = OrganizationFactory()
    client = key_client(issue_key(org, scopes=["read", "ask", "documents:write"]).secret)
    notes = b"# Refunds\n\nRefunds take 30 days from the purchase date.\n\n## Travel\n\nTrips are booked by Ann.\n"
    response = client.post("/api/v1/documents", {"file": SimpleUploadedFile("policy.md", notes)}, format="multipart")
    ingestion.document_ingest(org_id=org.pk, document_id=response.json()["id"])
    return org, client


def _ask(client, question="How long do refunds take?"):
    response = client.post("/api/v1/ask", {"question": question}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_the_ledger_row_records_the_prompt_version(library):
    from saas.llm.models import LLMCall

    org, client = library
    default = Prompt.all_orgs.get(organization__isnull=True, key="ask.system").production
    assert LLMCall.all_orgs.get(pk=_ask(client)["id"]).prompt_version_id == default.pk
    mine = prompts.prompt_version_create(org=org, key="ask.system", text="Answer with the sources only. Cite [n].")
    prompts.prompt_label_set(org=org, version=mine)
    row = LLMCall.all_orgs.get(pk=_ask(client, "When are refunds paid?")["id"])
    assert row.prompt_version_id == mine.pk and row.experiment_variant_id is None
    assert row.groundedness is not None  # the ask's check, kept on its row


def test_a_new_production_version_never_gets_the_old_versions_cached_answers(library):
    org, client = library
    assert _ask(client)["cached"] is False
    assert _ask(client)["cached"] is True
    version = prompts.prompt_version_create(org=org, key="ask.system", text="Answer from the sources. Cite [n].")
    prompts.prompt_label_set(org=org, version=version)
    # The exact cache misses (the system message changed); the semantic one would answer the same question from
    # the old version's entry, were it not keyed on the version.
    assert _ask(client)["cached"] is False
    assert _ask(client)["cached"] is True  # the new version's own entry


def test_experiment_arms_keep_their_own_cache_entries_and_ledger_rows(library):
    from saas.llm import gateway
    from saas.llm.models import LLMCall, SemanticCacheEntry
    from tests.accounts.factories import UserFactory

    org, _ = library
    default = Prompt.all_orgs.get(organization__isnull=True, key="ask.system").production
    mine = prompts.prompt_version_create(org=org, key="ask.system", text="Answer from the sources. Cite [n].")
    experiment = prompt_experiments.experiment_start(org=org, key="ask.system", name="Rules", versions=[default, mine])
    arms = {}
    for _ in range(40):  # members until both arms have one
        user = UserFactory()
        resolved = prompts.prompt_resolve(org=org, key="ask.system", subject=prompts.subject_of(user=user))
        arms.setdefault(resolved.variant_name, user)
        if len(arms) == 2:
            break
    assert set(arms) == {"A", "B"}
    from documents import services as documents

    for name, user in sorted(arms.items()):
        caller = gateway.Caller(org=org, feature="ask", user=user)
        answer = documents.ask(caller=caller, question="How long do refunds take?")
        assert answer.cached is False, name  # B never gets A's answer
        row = LLMCall.all_orgs.get(pk=answer.call_id)
        variant = ExperimentVariant.all_orgs.get(experiment=experiment, name=name)
        assert (row.experiment_variant_id, row.prompt_version_id) == (variant.pk, variant.version_id)
    versions = set(SemanticCacheEntry.all_orgs.filter(organization=org).values_list("prompt_version", flat=True))
    assert versions == {str(default.pk), str(mine.pk)}


def test_an_operator_versions_a_default_and_orgs_without_an_override_follow(tmp_path):
    from django.core.management import call_command

    plain, customised = OrganizationFactory(), OrganizationFactory()
    theirs = prompts.prompt_version_create(org=customised, key="chat.system", text="Team voice.")
    prompts.prompt_label_set(org=customised, version=theirs)
    rules = tmp_path / "chat.txt"
    rules.write_text("You are Crewdesk's assistant. Be concise.")
    call_command("prompt_default", "chat.system", file=str(rules), note="a real system message", production=True)
    resolved = prompts.prompt_resolve(org=plain, key="chat.system")
    assert (resolved.source, resolved.number, resolved.text) == ("default", 2, rules.read_text())
    assert prompts.prompt_resolve(org=customised, key="chat.system").version_id == theirs.pk


def test_resolving_reads_from_memory_after_the_first_time(django_assert_num_queries):
    org = OrganizationFactory()
    prompts.prompt_resolve(org=org, key="ask.system", subject="user:1")
    with django_assert_num_queries(0):
        for key in ("ask.system", "chat.system", "crew.manager", "crew.agent.writer"):
            assert prompts.prompt_resolve(org=org, key=key, subject="user:1").version_id is not None
