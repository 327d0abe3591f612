"""Prompts as versioned data: the resolver, immutability, labels, the gate hook, and what the gateway records."""

import pytest
from django.db import IntegrityError, transaction

from saas.llm import prompts
from saas.llm.models import Prompt, PromptVersion
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
