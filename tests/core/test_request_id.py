import json
import uuid

from tests.conftest import run_python, subprocess_env


def test_a_request_id_is_generated_and_returned(client):
    response = client.get("/healthz")
    request_id = response["X-Request-ID"]
    assert len(request_id) == 32
    assert uuid.UUID(hex=request_id)
    assert client.get("/healthz")["X-Request-ID"] != request_id


def test_a_valid_incoming_request_id_is_kept(client):
    incoming = str(uuid.uuid4())
    assert client.get("/healthz", HTTP_X_REQUEST_ID=incoming)["X-Request-ID"] == incoming


def test_a_hostile_incoming_request_id_is_replaced(client):
    hostile = "abc\r\nSet-Cookie: x=1; " + "A" * 5000
    returned = client.get("/healthz", HTTP_X_REQUEST_ID=hostile)["X-Request-ID"]
    assert returned != hostile
    assert uuid.UUID(hex=returned)


JSON_LOG_SNIPPET = """
import django, logging
django.setup()
from django.test import Client
from django.urls import path
logging.getLogger("crewdesk.probe").info("outside any request")
Client().get("/healthz", HTTP_X_REQUEST_ID="{request_id}")
from django_guid import set_guid
set_guid("{request_id}")
logging.getLogger("crewdesk.probe").warning("inside the request")
"""


def test_json_logs_carry_the_request_id():
    request_id = uuid.uuid4().hex
    env = subprocess_env(LOG_FORMAT="json")
    result = run_python(JSON_LOG_SNIPPET.format(request_id=request_id), env)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    by_message = {line["message"]: line for line in lines}
    assert by_message["outside any request"]["request_id"] == "-"
    inside = by_message["inside the request"]
    assert inside["request_id"] == request_id
    assert inside["level"] == "WARNING"
    assert inside["logger"] == "crewdesk.probe"
    assert "time" in inside
