"""Malformed, unknown, oversized and wrongly typed input: a clear 4xx in the error shape, nothing written."""

import json

import pytest

from accounts.models import ApiKey, AuditEvent, Invitation, Membership

pytestmark = pytest.mark.django_db


def _counts():
    return (
        ApiKey.all_orgs.count(),
        Invitation.all_orgs.count(),
        Membership.all_orgs.count(),
        AuditEvent.all_orgs.count(),
    )


@pytest.fixture
def api(admin_key):
    from tests.accounts.conftest import key_client

    return key_client(admin_key.secret)


@pytest.mark.parametrize(
    ("path", "body", "content_type", "status", "code"),
    [
        ("/api/v1/keys", "{not json", "application/json", 400, "malformed_request"),
        ("/api/v1/keys", "[1, 2]", "application/json", 400, "invalid"),
        (
            "/api/v1/keys",
            json.dumps({"name": "x", "scopes": ["read"], "admin": True}),
            "application/json",
            400,
            "invalid",
        ),
        ("/api/v1/keys", "name=x", "text/plain", 415, "unsupported_media_type"),
        ("/api/v1/invitations", json.dumps({"email": "not-an-email"}), "application/json", 400, "invalid"),
        (
            "/api/v1/invitations",
            json.dumps({"email": "a@example.com", "role": "god"}),
            "application/json",
            400,
            "invalid",
        ),
        (
            "/api/v1/invitations",
            json.dumps({"email": "a@example.com", "extra": 1}),
            "application/json",
            400,
            "invalid",
        ),
        ("/api/v1/org", json.dumps({"name": ""}), "application/json", 400, "invalid"),
    ],
)
def test_bad_bodies(api, path, body, content_type, status, code):
    before = _counts()
    method = api.patch if path == "/api/v1/org" else api.post
    response = method(path, body, content_type=content_type)
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and error["request_id"]
    assert _counts() == before


def test_unknown_fields_are_named(api):
    response = api.post("/api/v1/keys", {"name": "x", "scopes": ["read"], "scope": "typo"}, format="json")
    assert response.json()["error"]["details"]["fields"] == {"scope": ["Unknown field."]}


def test_oversized_bodies_are_refused_before_parsing(api, settings):
    settings.API_MAX_BODY_BYTES = 1000
    before = _counts()
    response = api.post("/api/v1/keys", {"name": "x" * 2000, "scopes": ["read"]}, format="json")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert _counts() == before


def test_a_non_uuid_id_is_a_404_not_a_500(api):
    response = api.get("/api/v1/keys/123")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_wrong_method_is_a_405_in_the_error_shape(api):
    response = api.delete("/api/v1/me")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
