"""Text PostgreSQL cannot store (a NUL, an unpaired surrogate) is refused with a 400 in the error shape
wherever it enters the API: JSON bodies (DictField and JSONField do not check it as CharField does), form
fields of uploads (Django's multipart parser already drops a NUL from a file name), query parameters and
headers. Nothing is written."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from agents.models import Crew, Run
from documents.models import Document
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import OrganizationFactory
from tests.agents.test_crews import _crew

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(models):
    org = OrganizationFactory()
    return key_client(issue_key(org, scopes=["read", "ask", "documents:write", "crews:run"]).secret)


@pytest.fixture
def models(db):
    from saas.llm.models import ModelConfig
    from saas.llm.registry import sync_registry

    sync_registry(ModelConfig)
    return ModelConfig.objects.all()


def _refused(response, where: str) -> None:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "malformed_request"
    assert where in error["message"] and "NUL character or an unpaired surrogate" in error["message"]
    assert error["request_id"]


@pytest.mark.parametrize("bad", ["x\u0000y", "x\ud800y"])
def test_a_run_input_that_cannot_be_stored_is_refused(client, bad):
    crew = _crew(client, default_model="local")
    body = json.dumps({"inputs": {"a": bad}})
    response = client.post(f"/api/v1/crews/{crew['id']}/runs", body, content_type="application/json")
    _refused(response, "inputs.a")
    assert not Run.all_orgs.exists()


def test_a_nul_in_a_json_key_is_refused(client):
    body = json.dumps({"name": "Calc", "schedule": {"cron": "", "inputs": {"a\u0000": 1}}})
    _refused(client.post("/api/v1/crews", body, content_type="application/json"), "schedule.inputs")
    assert not Crew.all_orgs.exists()


def test_an_idempotency_key_with_a_nul_is_refused(client):
    crew = _crew(client, default_model="local")
    response = client.post(f"/api/v1/crews/{crew['id']}/runs", {"inputs": {"a": 6}}, format="json",
                           HTTP_IDEMPOTENCY_KEY="order\x001")  # fmt: skip
    _refused(response, "header.Idempotency-Key")
    assert not Run.all_orgs.exists()


def test_a_query_parameter_with_a_nul_is_refused(client):
    _refused(client.get("/api/v1/documents", {"title": "a\x00b"}), "query.title")


def test_a_form_field_with_a_nul_is_refused(client):
    upload = SimpleUploadedFile("notes.txt", b"Plain text notes.", content_type="text/plain")
    response = client.post("/api/v1/documents", {"file": upload, "title": "No\x00tes"}, format="multipart")
    _refused(response, "title")
    assert not Document.all_orgs.exists()


def test_ordinary_text_passes(client):
    crew = _crew(client, default_model="local")
    text = "6 \u2013 \u00fcn\u00efcode \u2713 \U0001d518"  # a dash, accents, a check mark, an astral letter
    response = client.post(f"/api/v1/crews/{crew['id']}/runs", {"inputs": {"a": text}}, format="json")
    assert response.status_code == 202, response.content
