import re

import pytest
from django.core.management import call_command

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
