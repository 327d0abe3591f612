"""Tenancy fails closed: unscoped queries raise, and every route answers another org's objects with 404."""

import json
import re
import uuid

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from accounts.models import ApiKey, AuditEvent, DataExport, Invitation, Membership
from agents.models import Conversation, Crew, Message, Run, RunStep
from analytics.models import EvalCase, EvalDataset, EvalRun
from documents.models import Chunk, Collection, Document
from saas.core.api import OrgScopedMixin
from saas.core.tenancy import OrgScopeMismatch, OrgScopeMissing, org_scope
from saas.llm.api import ModelView
from saas.llm.models import Experiment, LLMCall, OrgProvider, Prompt, PromptVersion, Trace
from saas.llm.provider_registry import org_model_alias
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import (
    ApiKeyFactory,
    AuditEventFactory,
    DataExportFactory,
    InvitationFactory,
    MembershipFactory,
    OrganizationFactory,
)
from tests.agents.factories import ConversationFactory, CrewFactory, MessageFactory, RunFactory, RunStepFactory
from tests.analytics.factories import EvalCaseFactory, EvalDatasetFactory, EvalRunFactory, TraceFactory
from tests.documents.factories import ChunkFactory, CollectionFactory, DocumentFactory
from tests.llm.factories import (
    ExperimentFactory,
    LLMCallFactory,
    OrgProviderFactory,
    PromptFactory,
    PromptVersionFactory,
)

pytestmark = pytest.mark.django_db

# How to make an object of each org-owned model that an API route serves. A route whose model is missing
# here fails the walk below: teach it the model, and the route is checked from then on.
FACTORIES = {
    Conversation: ConversationFactory,
    Message: MessageFactory,
    Crew: CrewFactory,
    Run: RunFactory,
    RunStep: RunStepFactory,
    Collection: CollectionFactory,
    Document: DocumentFactory,
    Chunk: ChunkFactory,
    LLMCall: LLMCallFactory,
    OrgProvider: OrgProviderFactory,
    Membership: MembershipFactory,
    Invitation: InvitationFactory,
    ApiKey: ApiKeyFactory,
    AuditEvent: AuditEventFactory,
    DataExport: DataExportFactory,
    EvalDataset: EvalDatasetFactory,
    EvalCase: EvalCaseFactory,
    EvalRun: EvalRunFactory,
    Prompt: PromptFactory,
    PromptVersion: PromptVersionFactory,
    Experiment: ExperimentFactory,
    Trace: TraceFactory,
}


# Routes that name an object by something other than its primary key: its model, and the name it goes by there.
NAMED_BY = {
    ModelView: (OrgProvider, lambda provider: org_model_alias(provider.slug, provider.enabled_models[0]["id"])),
}


def test_the_default_manager_refuses_to_query_without_an_org():
    MembershipFactory()
    with pytest.raises(OrgScopeMissing):
        list(Membership.objects.all())


def test_the_default_manager_returns_only_the_org_in_scope():
    mine, theirs = MembershipFactory(), MembershipFactory()
    with org_scope(mine.organization):
        assert list(Membership.objects.all()) == [mine]
        assert not Membership.objects.filter(pk=theirs.pk).exists()
        with pytest.raises(OrgScopeMismatch):
            Membership.objects.for_org(theirs.organization)
    assert set(Membership.all_orgs.all()) == {mine, theirs}


def _walk(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern


def api_routes():
    routes = [(route, p) for route, p in _walk(get_resolver().url_patterns) if route.startswith(("api/v1/", "v1/"))]
    assert len(routes) >= 8
    return routes


def _methods(callback) -> list[str]:
    actions = getattr(callback, "actions", None)
    if actions:  # DRF adds "head" to this dict on the first GET: bodiless, and the same view as GET
        return [m.upper() for m in actions if m not in ("head", "options")]
    view_class = callback.view_class
    return [m.upper() for m in view_class.http_method_names if hasattr(view_class, m) and m not in ("options", "head")]


def _fill(route: str, object_id) -> str:
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", str(object_id), route)
    path = re.sub(r"<(?:\w+:)?\w+>", str(object_id), path)
    return "/" + path.replace("^", "").replace("$", "")


def test_every_api_route_is_org_scoped():
    for route, pattern in api_routes():
        view_class = getattr(pattern.callback, "cls", None) or pattern.callback.view_class
        assert issubclass(view_class, OrgScopedMixin), f"{route}: {view_class.__name__} skips the org-scoped base"


def test_a_key_of_org_b_never_reaches_org_a_objects_through_any_route():
    org_a, org_b = OrganizationFactory(), OrganizationFactory()
    client_b = key_client(issue_key(org_b, scopes=["read", "ask", "documents:write", "crews:run", "admin"]).secret)
    checked = 0
    for route, pattern in api_routes():
        view_class = getattr(pattern.callback, "cls", None) or pattern.callback.view_class
        model, name_of = NAMED_BY.get(view_class, (getattr(view_class, "model", None), lambda target: target.pk))
        has_id = "<" in route or "(?P<" in route
        if has_id:
            assert model in FACTORIES, f"{route}: teach this test to make a {model} (add it to FACTORIES)"
            target = FACTORIES[model](organization=org_a)
            secrets_of_a = {str(target.pk), org_a.slug, str(org_a.pk)}
            path = _fill(route, name_of(target))
            for method in _methods(pattern.callback):
                response = client_b.generic(method, path, data="{}", content_type="application/json")
                assert response.wsgi_request.resolver_match is not None, f"{path} does not resolve"
                assert response.status_code == 404, f"{method} {path} answered {response.status_code}"
                body = response.content.decode()
                assert not any(s in body for s in secrets_of_a), f"{method} {path} leaked org A data"
                assert response.json()["error"]["code"].endswith("not_found")  # /v1 says model_not_found, as OpenAI
                checked += 1
            manager = getattr(model, "all_orgs", model._default_manager)  # a person's export is not org-owned
            assert manager.filter(pk=target.pk).exists(), f"{path} deleted it"
        else:
            # Lists and org-level endpoints: org A's objects never appear.
            witnesses = [factory(organization=org_a) for factory in FACTORIES.values()]
            path = _fill(route, uuid.uuid4())
            response = client_b.get(path)
            if response.status_code == 405:
                continue
            body = response.content.decode()
            for witness in witnesses:
                assert str(witness.pk) not in body, f"GET {path} leaked {type(witness).__name__} of org A"
            assert str(org_a.pk) not in body and org_a.slug not in body
            checked += 1
    assert checked >= 15


def test_a_session_user_cannot_pick_another_orgs_scope_by_header(make_member, session_client):
    mine = make_member(OrganizationFactory(), role=Membership.Role.OWNER)
    other = OrganizationFactory()
    client = session_client(mine.user)
    response = client.get("/api/v1/me", HTTP_X_CREWDESK_ORG=str(other.pk))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "org_not_found"
    assert client.get("/api/v1/me", HTTP_X_CREWDESK_ORG="not-a-uuid").status_code == 404
    assert client.get("/api/v1/me").json()["org"]["id"] == str(mine.organization_id)


def browser_routes():
    return [(route, p) for route, p in _walk(get_resolver().url_patterns) if route.startswith("o/<slug:org_slug>/")]


def test_every_org_page_of_another_org_is_a_404(make_member):
    org_a, org_b = OrganizationFactory(), OrganizationFactory()
    owner_b = make_member(org_b, role=Membership.Role.OWNER)
    client = APIClient()
    client.force_login(owner_b.user)
    routes = browser_routes()
    assert len(routes) >= 10
    for route, _pattern in routes:
        for method in ("get", "post"):
            path = "/" + route.replace("<slug:org_slug>", org_a.slug)
            path = re.sub(r"<uuid:\w+>", str(uuid.uuid4()), path)
            response = getattr(client, method)(path)
            assert response.status_code == 404, f"{method.upper()} {path} answered {response.status_code}"


def test_an_org_page_with_another_orgs_object_id_is_refused_and_changes_nothing(make_member):
    org_a, org_b = OrganizationFactory(), OrganizationFactory()
    owner_b = make_member(org_b, role=Membership.Role.OWNER)
    victim = make_member(org_a, role=Membership.Role.MEMBER)
    key_a = ApiKeyFactory(organization=org_a)
    client = APIClient()
    client.force_login(owner_b.user)
    client.post(f"/o/{org_b.slug}/members/{victim.pk}/role/", {"role": "viewer"})
    client.post(f"/o/{org_b.slug}/members/{victim.pk}/remove/")
    client.post(f"/o/{org_b.slug}/keys/{key_a.pk}/revoke/")
    victim.refresh_from_db()
    key_a.refresh_from_db()
    assert victim.role == Membership.Role.MEMBER
    assert key_a.revoked_at is None
    assert not AuditEvent.all_orgs.filter(organization=org_a).exists()


def test_list_endpoints_show_only_the_callers_org(make_member):
    org_a, org_b = OrganizationFactory(), OrganizationFactory()
    make_member(org_a)
    mine = make_member(org_b)
    client = key_client(issue_key(org_b, scopes=["read"]).secret)
    body = client.get("/api/v1/members").json()
    assert [m["id"] for m in body["results"]] == [str(mine.pk)]
    assert json.dumps(body).count("@") == 1
