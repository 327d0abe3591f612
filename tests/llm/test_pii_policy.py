"""The org's PII options (phone regions, person names) from the settings page and the API to the gateway: what
reaches the upstream is masked as the org chose, the caller gets the values back (streams and tool calls too),
and bad options are refused in the one error shape with nothing written."""

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import AuditEvent, Membership
from saas.llm import config, gateway
from saas.llm.models import LLMCall, OrgLLMSettings
from saas.llm.providers import ChatRequest
from tests.accounts.factories import MembershipFactory

pytestmark = pytest.mark.django_db

LETTER = "echo: Dear Mr. Tanaka, call 020 7946 0958 or ann@example.com. Kind regards,\nAnna Lee"


def _sent(fake) -> str:
    return json.dumps(fake.requests()[-1]["body"]["messages"], ensure_ascii=False)


def _streamed(caller, request) -> str:
    items = gateway.chat_stream(caller=caller, model="test-small", request=request, bypass_cache=True)
    return "".join(i for i in items if isinstance(i, str))


def test_the_orgs_regions_and_names_option_decide_what_is_masked_and_all_comes_back(fake, models, caller):
    OrgLLMSettings.all_orgs.create(organization=caller.org, pii_phone_regions=["GB"], pii_mask_names=True)
    request = ChatRequest(messages=[{"role": "user", "content": LETTER}])
    result = gateway.chat(caller=caller, model="test-small", request=request)
    sent = _sent(fake)
    for value in ("Tanaka", "020 7946 0958", "ann@example.com", "Anna Lee"):
        assert value not in sent
    assert "[NAME_1]" in sent and "[NAME_2]" in sent and "[PHONE_1]" in sent and "[EMAIL_1]" in sent
    assert result.text == LETTER.removeprefix("echo: ")  # restored for the caller
    assert LLMCall.all_orgs.get().pii_masked == 4
    assert _streamed(caller, request) == LETTER.removeprefix("echo: ")  # and in a stream, token by token
    assert "Anna Lee" not in _sent(fake)


def test_names_are_sent_as_they_are_unless_the_org_switches_them_on(fake, models, caller):
    request = ChatRequest(messages=[{"role": "user", "content": LETTER}])
    gateway.chat(caller=caller, model="test-small", request=request)
    sent = _sent(fake)
    assert "Tanaka" in sent and "Anna Lee" in sent  # default: names off
    assert "020 7946 0958" not in sent  # GB is among the server's default regions


def test_a_national_number_outside_the_orgs_regions_is_not_read_as_a_phone(fake, models, caller):
    OrgLLMSettings.all_orgs.create(organization=caller.org, pii_phone_regions=["US"])
    request = ChatRequest(messages=[{"role": "user", "content": "echo: 020 7946 0958 and (415) 555-2671"}])
    gateway.chat(caller=caller, model="test-small", request=request)
    assert json.loads(_sent(fake))[0]["content"] == "echo: 020 7946 0958 and [PHONE_1]"


def test_tool_call_arguments_sent_back_by_the_caller_are_masked_again(fake, models, caller):
    models["small"].supports_tools = True
    models["small"].save(update_fields=["supports_tools"])
    tool = {"type": "function", "function": {"name": "send_mail", "parameters": {"type": "object"}}}
    ask = [{"role": "user", "content": "Mail ann@example.com the report"}]
    fake.script("fake-small", {"tool_calls": [{"name": "send_mail", "arguments": {"to": "[EMAIL_1]"}}]})
    (call,) = gateway.chat(caller=caller, model="test-small", request=ChatRequest(ask, tools=[tool])).tool_calls
    assert json.loads(call.arguments) == {"to": "ann@example.com"}  # the caller's tool gets the real address
    follow_up = ChatRequest(
        [*ask, {"role": "assistant", "content": None, "tool_calls": [call.as_message_part()]},
         {"role": "tool", "tool_call_id": call.id, "content": "sent to ann@example.com"}],
        tools=[tool],
    )  # fmt: skip
    fake.script("fake-small", {"reply": "Done."})
    gateway.chat(caller=caller, model="test-small", request=follow_up)
    sent = fake.requests()[-1]["body"]["messages"]
    assert "ann@example.com" not in json.dumps(sent)
    assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == {"to": "[EMAIL_1]"}


def _admin_client() -> tuple[APIClient, Any]:
    admin = MembershipFactory(role=Membership.Role.ADMIN)
    client = APIClient()
    client.force_login(admin.user)
    return client, admin


def test_the_api_reads_and_changes_the_options_partially_and_audits_them(settings):
    settings.LLM_PII_PHONE_REGIONS = ["US", "GB", "DE", "FR"]
    client, admin = _admin_client()
    assert (
        client.get("/api/v1/ai-settings").json().items()
        >= {
            "pii_policy": "mask",
            "pii_phone_regions": [],
            "pii_phone_regions_default": ["US", "GB", "DE", "FR"],
            "pii_mask_names": False,
        }.items()
    )  # fmt: skip (the guardrails' settings come with them)
    changed = client.patch("/api/v1/ai-settings", {"pii_phone_regions": ["gb", " de", "GB"], "pii_mask_names": True},
                           format="json")  # fmt: skip
    assert changed.status_code == 200
    assert changed.json()["pii_phone_regions"] == ["GB", "DE"] and changed.json()["pii_mask_names"] is True
    assert changed.json()["pii_policy"] == "mask"  # not sent, not changed
    policy = config.current().policy(admin.organization)
    assert (policy.pii_phone_regions, policy.pii_mask_names) == (["GB", "DE"], True)  # what the gateway applies
    event = AuditEvent.objects.for_org(admin.organization).get(action="org.pii_policy_changed")
    assert event.metadata == {"pii_phone_regions": {"from": [], "to": ["GB", "DE"]},
                              "pii_mask_names": {"from": False, "to": True}}  # fmt: skip
    client.patch("/api/v1/ai-settings", {"pii_mask_names": True}, format="json")  # no change, no event
    assert AuditEvent.objects.for_org(admin.organization).filter(action="org.pii_policy_changed").count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"pii_phone_regions": ["XX"]}, "pii_phone_regions"),
        ({"pii_phone_regions": ["GB", "Narnia"]}, "pii_phone_regions"),
        ({"pii_phone_regions": "GB"}, "pii_phone_regions"),
        ({"pii_phone_regions": ["US", "GB", "DE", "FR", "ES", "IT", "NL", "IN", "JP"]}, "pii_phone_regions"),
        ({"pii_mask_names": "sometimes"}, "pii_mask_names"),
        ({"pii_policy": "off", "pii_phone_regions": ["ZZ"]}, "pii_phone_regions"),
    ],
)
def test_bad_options_are_refused_with_the_field_named_and_nothing_is_written(body, field):
    client, admin = _admin_client()
    refused = client.patch("/api/v1/ai-settings", body, format="json")
    assert refused.status_code == 400
    assert field in refused.json()["error"]["details"]["fields"]
    row = OrgLLMSettings.all_orgs.filter(organization=admin.organization).first()
    assert row is None or (row.pii_policy, row.pii_phone_regions, row.pii_mask_names) == ("mask", [], False)


def test_members_read_the_options_and_only_admins_change_them():
    _, admin = _admin_client()
    viewer = APIClient()
    viewer.force_login(MembershipFactory(organization=admin.organization, role=Membership.Role.VIEWER).user)
    assert viewer.get("/api/v1/ai-settings").json()["pii_mask_names"] is False
    assert viewer.patch("/api/v1/ai-settings", {"pii_mask_names": True}, format="json").status_code == 403
    assert not OrgLLMSettings.all_orgs.filter(organization=admin.organization, pii_mask_names=True).exists()


def test_the_settings_page_sets_regions_and_names(client):
    admin = MembershipFactory(role=Membership.Role.ADMIN)
    org = admin.organization
    client.force_login(admin.user)
    page = client.get(f"/o/{org.slug}/settings/").content.decode()
    assert 'name="pii_phone_regions"' in page and 'name="pii_mask_names"' in page
    client.post(f"/o/{org.slug}/settings/pii/",
                {"pii_policy": "mask", "pii_phone_regions": "gb, de", "pii_mask_names": ["0", "1"]})  # fmt: skip
    policy = config.current().policy(org)
    assert (policy.pii_phone_regions, policy.pii_mask_names) == (["GB", "DE"], True)
    page = client.get(f"/o/{org.slug}/settings/").content.decode()
    assert 'value="GB, DE"' in page and 'value="1" checked' in page
    bad = {"pii_policy": "block", "pii_phone_regions": "gb xx", "pii_mask_names": "0"}
    refused = client.post(f"/o/{org.slug}/settings/pii/", bad, follow=True)
    assert "Unknown region code: xx" in refused.content.decode()
    policy = config.current().policy(org)
    assert (policy.pii_policy, policy.pii_phone_regions, policy.pii_mask_names) == ("mask", ["GB", "DE"], True)
    client.post(f"/o/{org.slug}/settings/pii/", {"pii_policy": "mask", "pii_phone_regions": "", "pii_mask_names": "0"})
    policy = config.current().policy(org)
    assert (policy.pii_phone_regions, policy.pii_mask_names) == ([], False)  # unticked box, empty regions: defaults
