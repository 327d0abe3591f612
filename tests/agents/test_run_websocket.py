"""The run page's live channel (/ws/runs/<id>/) through a real daphne: replay, live events, tenancy."""

import json

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from agents import run_events
from saas.core import crypto
from tests.accounts.factories import MembershipFactory
from tests.agents.factories import RunFactory, RunStepFactory
from tests.agents.test_chat import _cookie

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def _socket(server, user, run_id):
    return connect(f"ws://{server.host}:{server.port}/ws/runs/{run_id}/",
                   additional_headers={"Cookie": _cookie(user)}, origin=server.url, open_timeout=10)  # fmt: skip


def test_the_run_channel_replays_then_forwards_live_events_to_the_end(daphne_server):
    member = MembershipFactory(role="viewer")  # reading a run needs only read
    run = RunFactory(organization=member.organization, status="running")
    RunStepFactory(organization=member.organization, run=run, seq=1, content_encrypted=crypto.encrypt("planned"))
    with _socket(daphne_server, member.user, run.pk) as ws:
        first = json.loads(ws.recv(timeout=10))
        replayed = json.loads(ws.recv(timeout=10))
        assert first["type"] == "run" and first["run"]["status"] == "running"
        assert replayed["type"] == "step" and replayed["step"]["content"] == "planned"
        run_events.publish(run.pk, {"type": "step", "step": {"seq": 1, "content": "a duplicate"}})  # skipped
        run_events.publish(run.pk, {"type": "token", "agent": "writer", "task": "t", "text": "Hel"})
        run_events.publish(run.pk, {"type": "status", "status": "succeeded", "error": None})
        assert json.loads(ws.recv(timeout=10))["text"] == "Hel"
        assert json.loads(ws.recv(timeout=10)) == {"type": "status", "status": "succeeded", "error": None}


def test_another_orgs_run_does_not_open(daphne_server):
    member = MembershipFactory(role="member")
    theirs = RunFactory()
    with pytest.raises(InvalidStatus) as refused:
        _socket(daphne_server, member.user, theirs.pk).close()
    assert refused.value.response.status_code == 403  # closed before accept: the handshake is refused
