"""Ask over the page's websocket, on a real daphne: the answer streams with its citations, another org's
channel does not open, a slow answer can be stopped (and the model call is recorded as cancelled)."""

import json
import time

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from documents import ingestion, services
from saas.llm.models import LLMCall, ModelConfig, OrgLLMSettings
from saas.llm.registry import sync_registry
from tests.accounts.factories import MembershipFactory, OrganizationFactory
from tests.agents.test_chat import _cookie, _until
from tests.documents import files
from tests.documents.test_search_and_ask import HANDBOOK

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def _socket(server, user, org_id):
    return connect(
        f"ws://{server.host}:{server.port}/ws/ask/{org_id}/",
        additional_headers={"Cookie": _cookie(user)}, origin=server.url, open_timeout=10,
    )  # fmt: skip


@pytest.fixture
def member(db):
    sync_registry(ModelConfig)
    member = MembershipFactory(role="member")
    org = member.organization
    document = services.document_upload(org=org, data=files.pdf(HANDBOOK), filename="handbook.pdf")
    ingestion.document_ingest(org_id=org.pk, document_id=document.pk)
    return member


def test_the_answer_streams_with_citations(daphne_server, member):
    OrgLLMSettings(organization=member.organization, default_model="local").save()
    with _socket(daphne_server, member.user, member.organization_id) as ws:
        ws.send(json.dumps({"type": "ask", "question": "How long do refunds take?"}))
        events = _until(ws, "done")
    done = events[-1]
    assert done["type"] == "done" and done["citations"][0]["page"] == 3
    assert "".join(e["text"] for e in events if e["type"] == "delta") == done["answer"]
    with _socket(daphne_server, member.user, member.organization_id) as ws:
        ws.send("not json")
        assert json.loads(ws.recv(timeout=10))["error"]["code"] == "malformed"
        ws.send(json.dumps({"type": "ask", "question": ""}))
        assert json.loads(ws.recv(timeout=10))["error"]["code"] == "invalid"


def test_another_orgs_channel_does_not_open(daphne_server, member):
    with pytest.raises(InvalidStatus), _socket(daphne_server, member.user, OrganizationFactory().pk):
        pass


def test_stop_ends_a_slow_answer_and_cancels_the_model_call(daphne_server, member, fake, models):
    sync_registry(ModelConfig)  # the `models` fixture replaced the registry with its test models
    OrgLLMSettings(organization=member.organization, default_model="test-small").save()
    fake.config(token_rate=3)  # about three seconds for the whole answer
    with _socket(daphne_server, member.user, member.organization_id) as ws:
        ws.send(json.dumps({"type": "ask", "question": "How long do refunds take?"}))
        first = json.loads(ws.recv(timeout=20))
        assert first["type"] == "delta", first
        ws.send(json.dumps({"type": "stop"}))
        events = _until(ws, "stopped")
    assert events[-1]["type"] == "stopped"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not LLMCall.all_orgs.filter(status="cancelled").exists():
        time.sleep(0.1)
    assert LLMCall.all_orgs.get(feature="ask", status="cancelled").model_used == "test-small"
