import pytest
from django.http import Http404
from django_guid import clear_guid, set_guid
from rest_framework import exceptions

from saas.core.errors import ApplicationError, Conflict, api_exception_handler


@pytest.fixture
def request_id():
    set_guid("0123456789abcdef0123456789abcdef")
    yield "0123456789abcdef0123456789abcdef"
    clear_guid()


def test_application_errors_render_in_the_one_shape(request_id):
    response = api_exception_handler(Conflict("Slug taken.", code="slug_taken", details={"slug": "x"}), {})
    assert response.status_code == 409
    assert response.data == {
        "error": {
            "code": "slug_taken",
            "message": "Slug taken.",
            "details": {"slug": "x"},
            "request_id": request_id,
        }
    }


def test_validation_errors_keep_their_field_messages(request_id):
    response = api_exception_handler(exceptions.ValidationError({"name": ["This field is required."]}), {})
    assert response.status_code == 400
    assert response.data["error"]["code"] == "invalid"
    assert response.data["error"]["details"] == {"fields": {"name": ["This field is required."]}}


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (exceptions.ParseError(), 400, "malformed_request"),
        (exceptions.NotAuthenticated(), 401, "not_authenticated"),
        (exceptions.PermissionDenied(), 403, "permission_denied"),
        (Http404(), 404, "not_found"),
        (exceptions.MethodNotAllowed("DELETE"), 405, "method_not_allowed"),
        (exceptions.UnsupportedMediaType("text/xml"), 415, "unsupported_media_type"),
        (exceptions.Throttled(wait=3), 429, "rate_limited"),
        (ApplicationError("Nope."), 400, "bad_request"),
    ],
)
def test_every_error_has_a_code_a_message_and_the_request_id(request_id, exc, status, code):
    response = api_exception_handler(exc, {})
    assert response.status_code == status
    assert response.data["error"]["code"] == code
    assert response.data["error"]["message"]
    assert response.data["error"]["request_id"] == request_id


def test_unexpected_exceptions_are_left_to_the_500_handler():
    assert api_exception_handler(ValueError("boom"), {}) is None


@pytest.mark.django_db
def test_unknown_api_routes_answer_json_404(client):
    response = client.get("/api/v1/does-not-exist")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert response.json()["error"]["request_id"] == response["X-Request-ID"]


@pytest.mark.django_db
def test_unknown_pages_answer_an_html_404(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert b"Not found" in response.content
    assert response["Content-Type"].startswith("text/html")
