import re
import uuid

import pytest
from django.core.management import call_command

from accounts import permissions
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import OrganizationFactory
from tests.accounts.test_tenancy import _fill, api_routes

pytestmark = pytest.mark.django_db


def test_the_openapi_schema_is_valid_and_complete(tmp_path):
    target = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    schema = target.read_text()
    for path in ("/api/v1/me", "/api/v1/members", "/api/v1/invitations", "/api/v1/keys", "/api/v1/audit-events"):
        assert f"{path}:" in schema
    assert "bearer" in schema


def test_the_docs_page_loads_its_assets_from_us_not_a_cdn(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    external = [u for u in re.findall(r'(?:src|href)="(https?://[^"]+)"', html)]
    assert external == []


def test_options_answers_every_api_route_without_a_server_error():
    """OPTIONS on a route whose view has no serializer (or needs an object) was a 500: DRF's metadata built a
    form of each writable action from `get_serializer()` and `get_object()`. Every route, with and without
    an object id."""
    org = OrganizationFactory()
    client = key_client(issue_key(org, scopes=sorted(permissions.KEY_SCOPES)).secret)
    checked = 0
    for route, _pattern in api_routes():
        path = _fill(route, uuid.uuid4())
        response = client.options(path)
        assert response.status_code == 200, f"OPTIONS {path} answered {response.status_code}: {response.content!r}"
        body = response.json()
        assert body["name"] and "actions" not in body, path
        assert "OPTIONS" in response["Allow"], path
        checked += 1
    assert checked >= 30


def test_options_needs_a_key_like_everything_else(client):
    response = client.options("/api/v1/crews")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


class _Broken(dict):
    def items(self):
        raise RuntimeError("a bug in a view")


def test_a_view_that_fails_unexpectedly_leaves_no_org_scope_behind(monkeypatch):
    """A 500 skips DRF's finalize_response; the org scope entered for the request must end with it anyway,
    or the next request in the same context finds another org in scope."""
    from agents import starters
    from saas.core.tenancy import current_org_id

    org = OrganizationFactory()
    client = key_client(issue_key(org, scopes=["read"]).secret)
    client.raise_request_exception = False
    monkeypatch.setattr(starters, "STARTERS", _Broken())
    assert client.get("/api/v1/crew-starters").status_code == 500
    assert current_org_id() is None
    monkeypatch.undo()
    other = key_client(issue_key(OrganizationFactory(), scopes=["read"]).secret)
    assert other.get("/api/v1/crew-starters").status_code == 200
