"""An org's own providers (bring your own key): admins add them over the API and the page, test the
connection, choose models; only that org reaches them; keys never come back out (responses, audit, export,
logs); they are erased with the org."""

import io
import json
import logging
import zipfile

import pytest
from rest_framework.test import APIClient

from accounts import erasure, exports
from accounts.models import AuditEvent, Membership
from saas.llm import breaker, gateway, provider_registry
from saas.llm.models import LLMCall, OrgProvider
from saas.llm.providers import ChatRequest, UpstreamUnavailable
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import OrganizationFactory

KEY = "sk-team-own-key-7777"
HINT = "…7777"
ECHO = ChatRequest(messages=[{"role": "user", "content": "echo: from the team's key"}])


@pytest.fixture
def make_member(db):
    from tests.accounts.factories import MembershipFactory

    return lambda org, role=Membership.Role.MEMBER: MembershipFactory(organization=org, role=role)


@pytest.fixture
def session_client():
    def make(user):
        client = APIClient()
        client.force_login(user)
        return client

    return make


@pytest.fixture
def allow_loopback(settings):
    settings.LLM_ORG_PROVIDERS_ALLOW_PRIVATE = True  # the fakes listen on 127.0.0.1


@pytest.fixture
def team(db, fake, allow_loopback):
    org = OrganizationFactory()
    admin = key_client(issue_key(org, scopes=["read", "ask", "admin"]).secret)
    return org, admin


def _add(admin, base_url, *, kind="openai_compatible", key=KEY, name="Our vLLM", **extra):
    response = admin.post("/api/v1/providers", {"name": name, "kind": kind, "base_url": base_url, "api_key": key,
                                                **extra}, format="json")  # fmt: skip
    assert response.status_code == 201, response.content
    return response.json()


def test_an_admin_adds_tests_and_uses_a_provider_and_the_key_never_comes_back(team, fake, caplog):
    org, admin = team
    caplog.set_level(logging.DEBUG)
    created = _add(admin, fake.base_url, headers={"X-Team": "header-secret-value"})
    assert created["key_hint"] == HINT and created["header_names"] == ["X-Team"] and created["slug"] == "our-vllm"
    tested = admin.post(f"/api/v1/providers/{created['id']}/test")
    assert tested.status_code == 200 and tested.json()["models"] == [{"id": "fake-small", "kind": "chat"}]
    chosen = admin.patch(f"/api/v1/providers/{created['id']}", {"models": ["fake-small"]}, format="json")
    assert chosen.json()["models"][0]["alias"] == "our-vllm/fake-small"

    result = gateway.chat(caller=gateway.Caller(org=org), model="our-vllm/fake-small", request=ECHO)
    assert result.text == "from the team's key" and result.model == "our-vllm/fake-small"
    sent = fake.requests()[-1]
    assert sent["auth"] == f"Bearer {KEY}" and sent["body"]["model"] == "fake-small"
    assert LLMCall.all_orgs.get().upstream == "org:our-vllm"
    assert "our-vllm/fake-small" in {m.alias for m in provider_registry.reachable_models(org)}

    everything = [created, tested.json(), chosen.json(), admin.get("/api/v1/providers").json(),
                  admin.get(f"/api/v1/providers/{created['id']}").json()]  # fmt: skip
    assert KEY not in json.dumps(everything) and "header-secret-value" not in json.dumps(everything)
    audit = list(AuditEvent.all_orgs.filter(organization=org, action__startswith="llm.provider"))
    assert {e.action for e in audit} == {"llm.provider_created", "llm.provider_models_changed"}
    assert KEY not in json.dumps([e.metadata for e in audit]) and KEY not in caplog.text
    row = OrgProvider.all_orgs.get()
    assert KEY not in row.api_key_encrypted and row.api_key == KEY  # encrypted at rest


def test_the_chat_model_picker_lists_the_teams_models(team, fake, make_member, session_client):
    org, admin = team
    created = _add(admin, fake.base_url)
    admin.patch(f"/api/v1/providers/{created['id']}", {"models": ["fake-small"]}, format="json")
    member = make_member(org, role=Membership.Role.MEMBER)
    client = session_client(member.user)
    conversation = client.post(f"/o/{org.slug}/chat/")
    page = client.get(conversation["Location"])
    assert b'value="our-vllm/fake-small"' in page.content


def test_another_orgs_provider_is_a_404_and_its_models_do_not_exist_for_others(team, fake):
    _, admin = team
    created = _add(admin, fake.base_url, models=["fake-small"])
    other = OrganizationFactory()
    intruder = key_client(issue_key(other, scopes=["read", "ask", "admin"]).secret)
    url = f"/api/v1/providers/{created['id']}"
    for response in (intruder.get(url), intruder.patch(url, {"name": "mine"}, format="json"), intruder.delete(url),
                     intruder.post(f"{url}/test")):  # fmt: skip
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert intruder.get("/api/v1/providers").json() == {"results": []}
    with pytest.raises(gateway.ModelNotFound):
        gateway.chat(caller=gateway.Caller(org=other), model="our-vllm/fake-small", request=ECHO)
    assert OrgProvider.all_orgs.get().name == "Our vLLM"
    # GET /v1/models/<id> (models.retrieve): the team's own alias, slash and all, for the team only.
    assert admin.get("/v1/models/our-vllm/fake-small").json()["id"] == "our-vllm/fake-small"
    hidden = intruder.get("/v1/models/our-vllm/fake-small")
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "model_not_found"


def test_only_admins_manage_providers(team, fake):
    org, admin = team
    created = _add(admin, fake.base_url)
    reader = key_client(issue_key(org, scopes=["read", "ask"]).secret)
    assert reader.get("/api/v1/providers").status_code == 403
    assert reader.post(f"/api/v1/providers/{created['id']}/test").status_code == 403
    assert reader.delete(f"/api/v1/providers/{created['id']}").status_code == 403
    assert OrgProvider.all_orgs.count() == 1


def test_a_changed_key_is_kept_when_not_given_and_deleting_removes_the_models(team, fake):
    org, admin = team
    created = _add(admin, fake.base_url, models=["fake-small"])
    url = f"/api/v1/providers/{created['id']}"
    renamed = admin.patch(url, {"name": "Renamed", "api_key": ""}, format="json").json()
    assert renamed["key_hint"] == HINT and OrgProvider.all_orgs.get().api_key == KEY
    assert admin.patch(url, {"api_key": "sk-brand-new-key-9999"}, format="json").json()["key_hint"] == "…9999"
    assert admin.patch(url, {"kind": "anthropic"}, format="json").status_code == 400
    assert admin.delete(url).status_code == 204
    with pytest.raises(gateway.ModelNotFound):
        gateway.chat(caller=gateway.Caller(org=org), model="our-vllm/fake-small", request=ECHO)
    actions = list(
        AuditEvent.all_orgs.filter(organization=org).order_by("created_at").values_list("action", "metadata")
    )
    updated = [m for a, m in actions if a == "llm.provider_updated"]
    assert [u["changed"] for u in updated] == [["name"], ["api_key"]]
    assert "llm.provider_deleted" in [a for a, _ in actions]
    assert "sk-brand-new-key-9999" not in json.dumps(actions)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"kind": "local"}, "kind"),
        ({"kind": "openai_compatible", "base_url": ""}, "base_url"),
        ({"kind": "anthropic", "api_key": ""}, "api_key"),
        ({"base_url": "ftp://example.net"}, "base_url"),
        ({"base_url": "https://user:pw@example.net/v1"}, "base_url"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"headers": {"Bad Header": "x"}}, "headers"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_input_is_refused_by_field_and_nothing_is_saved(team, payload, field):
    _, admin = team
    body = {"name": "P", "kind": "openai_compatible", "base_url": "https://llm.example.net/v1", "api_key": KEY,
            **payload}  # fmt: skip
    response = admin.post("/api/v1/providers", body, format="json")
    assert response.status_code == 400 and field in response.json()["error"]["details"]["fields"]
    assert not OrgProvider.all_orgs.exists()


def test_private_addresses_are_refused_unless_the_operator_allows_them(team, settings):
    _, admin = team
    settings.LLM_ORG_PROVIDERS_ALLOW_PRIVATE = False
    for url in ("http://127.0.0.1:11434/v1", "http://169.254.169.254/latest", "http://10.1.2.3/v1", "http://[::1]/v1"):
        response = admin.post("/api/v1/providers", {"name": "P", "kind": "openai_compatible", "base_url": url},
                              format="json")  # fmt: skip
        assert response.status_code == 400, url
        assert "private" in response.json()["error"]["details"]["fields"]["base_url"][0]
    assert not OrgProvider.all_orgs.exists()


def test_a_failed_connection_test_says_why_without_the_key(team, fake_anthropic):
    _, admin = team
    created = _add(admin, fake_anthropic.base_url, kind="anthropic", key="sk-wrong", name="Claude")
    response = admin.post(f"/api/v1/providers/{created['id']}/test")
    assert response.status_code == 502 and response.json()["error"]["code"] == "provider_test_failed"
    assert "sk-wrong" not in response.content.decode()
    shown = admin.get(f"/api/v1/providers/{created['id']}").json()
    assert shown["test_error"] and shown["tested_at"] and shown["discovered_models"] == []


def test_anthropic_and_gemini_connection_tests_list_their_models(team, fake_anthropic, fake_gemini):
    _, admin = team
    claude = _add(admin, fake_anthropic.base_url, kind="anthropic", name="Claude")
    gemini = _add(admin, fake_gemini.base_url, kind="gemini", name="Gemini")
    listed = admin.post(f"/api/v1/providers/{claude['id']}/test").json()["models"]
    assert [m["id"] for m in listed] == ["claude-haiku-4-5", "claude-sonnet-4-5"]
    listed = admin.post(f"/api/v1/providers/{gemini['id']}/test").json()["models"]
    assert {"id": "gemini-embedding-001", "kind": "embedding"} in listed


def test_each_orgs_provider_has_its_own_circuit(team, fake, settings):
    org, admin = team
    settings.LLM_ROUTER = {**settings.LLM_ROUTER, "max_retries": 0}
    settings.LLM_BREAKER = {**settings.LLM_BREAKER, "failure_threshold": 1, "window": 60, "cooldown": 60}
    _add(admin, fake.base_url, models=["fake-small"])
    other = OrganizationFactory()
    _add(key_client(issue_key(other, scopes=["admin"]).secret), fake.base_url, models=["fake-small"])
    fake.script("fake-small", {"status": 500})
    with pytest.raises(UpstreamUnavailable):
        gateway.chat(caller=gateway.Caller(org=org), model="our-vllm/fake-small", request=ECHO, bypass_cache=True)
    assert breaker.state(f"org:{org.pk}:our-vllm") == "open"
    assert breaker.state(f"org:{other.pk}:our-vllm") == "closed"
    answer = gateway.chat(caller=gateway.Caller(org=other), model="our-vllm/fake-small", request=ECHO)
    assert answer.text == "from the team's key"


def test_the_org_export_leaves_keys_out_and_erasure_removes_the_providers(team, fake, make_member):
    org, admin = team
    _add(admin, fake.base_url, models=["fake-small"], headers={"X-Team": "header-secret-value"})
    owner = make_member(org, role=Membership.Role.OWNER)
    owner.user.set_password("correct horse battery staple")
    owner.user.save()
    client = APIClient()
    client.force_login(owner.user)
    asked = client.post("/api/v1/org/export", HTTP_X_CREWDESK_ORG=str(org.pk))
    export = exports.export_build(export_id=asked.json()["id"])
    with export.file.open("rb") as handle, zipfile.ZipFile(io.BytesIO(handle.read())) as archive:
        names = [n for n in archive.namelist() if n.endswith("ai_providers.json")]
        everything = b"".join(archive.read(n) for n in archive.namelist())
        providers = json.loads(archive.read(names[0]))
    assert providers[0]["name"] == "Our vLLM" and providers[0]["header_names"] == ["X-Team"]
    assert (
        KEY.encode() not in everything and b"header-secret-value" not in everything and HINT.encode() not in everything
    )
    erased = client.post("/api/v1/org/delete", {"password": "correct horse battery staple", "confirm": org.slug},
                         format="json", HTTP_X_CREWDESK_ORG=str(org.pk))  # fmt: skip
    record = erasure.erasure_run(record_id=erased.json()["id"])
    assert record.status == "done" and record.counts["ai_providers"] == 1
    assert not OrgProvider.all_orgs.exists()
