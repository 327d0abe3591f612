"""Retention: admins set how long conversations and the ledger's prompts and answers are kept; the purge removes
what is older in batches, leaves the ledger rows' figures, and touches no other org."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts import services
from accounts.models import AuditEvent, Organization
from agents.models import Conversation, Message
from saas.core import crypto
from saas.llm.models import LLMCall
from tests.accounts.factories import MembershipFactory
from tests.agents.factories import ConversationFactory, MessageFactory
from tests.llm.factories import LLMCallFactory

pytestmark = pytest.mark.django_db


def _aged(model, row, days: int, field: str) -> None:
    model.all_orgs.filter(pk=row.pk).update(**{field: timezone.now() - timedelta(days=days)})


def _content(org, *, age_days: int):
    conversation = ConversationFactory(organization=org)
    MessageFactory(organization=org, conversation=conversation, content_encrypted=crypto.encrypt("hello"))
    _aged(Conversation, conversation, age_days, "updated_at")
    call = LLMCallFactory(organization=org, input_encrypted=crypto.encrypt("q"), output_encrypted=crypto.encrypt("a"),
                          cost_usd=Decimal("0.25"))  # fmt: skip
    _aged(LLMCall, call, age_days, "created_at")
    return conversation, call


def test_admins_set_retention_and_the_purge_keeps_only_what_is_younger(client):
    admin = MembershipFactory(role="admin")
    org = admin.organization
    client.force_login(admin.user)
    refused = client.post(f"/o/{org.slug}/settings/retention/", {"conversations": "-3", "ledger_content": "x"},
                          follow=True)  # fmt: skip
    assert "check: conversations, ledger_content" in refused.content.decode()
    client.post(f"/o/{org.slug}/settings/retention/", {"conversations": "30", "ledger_content": "90"})
    org.refresh_from_db()
    assert (org.retain_conversations_days, org.retain_ledger_content_days) == (30, 90)
    assert AuditEvent.objects.for_org(org).filter(action="org.retention_changed").count() == 1

    old_chats = [_content(org, age_days=40) for _ in range(3)]  # past 30 days; the ledger rows within 90
    ancient = [_content(org, age_days=120) for _ in range(3)]  # past both
    recent = _content(org, age_days=5)
    other = MembershipFactory().organization  # no retention: keeps everything, however old
    others = _content(other, age_days=400)

    totals = services.retention_purge(batch_size=2)  # several batches per store
    assert totals == {"conversations": 6, "ledger_content": 3, "traces": 0}  # no traces made here
    remaining = set(Conversation.all_orgs.values_list("pk", flat=True))
    assert remaining == {recent[0].pk, others[0].pk}
    assert not Message.all_orgs.filter(conversation_id__in=[c.pk for c, _ in old_chats + ancient]).exists()
    for _, call in ancient:  # content gone, the row and its figures stay
        row = LLMCall.all_orgs.get(pk=call.pk)
        assert (row.input_encrypted, row.output_encrypted, row.cost_usd) == ("", "", Decimal("0.25"))
    for _, call in [*old_chats, recent, others]:
        assert crypto.decrypt(LLMCall.all_orgs.get(pk=call.pk).input_encrypted) == "q"
    again = services.retention_purge(batch_size=2)  # idempotent
    assert again == {"conversations": 0, "ledger_content": 0, "traces": 0}


def test_members_cannot_change_retention(client):
    member = MembershipFactory(role="member")
    client.force_login(member.user)
    response = client.post(f"/o/{member.organization.slug}/settings/retention/", {"conversations": "1"})
    assert response.status_code == 403
    assert Organization.objects.get(pk=member.organization_id).retain_conversations_days is None
