"""A NUL or an unpaired surrogate in what reaches the gateway (the model's name, a message, an input to embed)
is refused before anything is looked up or sent: a 400 in the endpoint's error shape, and one ledger row
that records the refusal (the gateway's promise: one row whatever happens)."""

import json

import pytest

from saas.llm import gateway
from saas.llm.models import LLMCall
from saas.llm.providers import BadRequest, ChatRequest
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import OrganizationFactory

pytestmark = pytest.mark.django_db

MESSAGES = [{"role": "user", "content": "Say something"}]


@pytest.fixture
def client(db):
    return key_client(issue_key(OrganizationFactory(), scopes=["read", "ask"]).secret)


def _post(client, path, body):
    return client.post(path, json.dumps(body), content_type="application/json")


def _one_refusal(**fields) -> LLMCall:
    call = LLMCall.all_orgs.get()
    assert call.status == LLMCall.Status.ERROR and call.error_class == "bad_request"
    for name, value in fields.items():
        assert getattr(call, name) == value
    return call


@pytest.mark.parametrize("model", ["test-small\u0000", "\u0000"])
def test_an_unstorable_model_name_is_a_400_with_a_ledger_row(fake, models, client, model):
    response = _post(client, "/v1/chat/completions", {"model": model, "messages": MESSAGES})
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "bad_request"
    assert "`model`" in error["message"]
    _one_refusal(model_requested=model.replace("\u0000", "\ufffd"), feature="chat")
    assert fake.requests() == []


def test_an_unstorable_message_is_a_400_with_a_ledger_row(fake, models, client):
    response = _post(client, "/v1/chat/completions", {"model": "test-small", "messages": [
        {"role": "user", "content": "Say\u0000something"}]})  # fmt: skip
    assert response.status_code == 400, response.content
    assert "messages[0].content" in response.json()["error"]["message"]
    _one_refusal(model_requested="test-small")
    assert fake.requests() == []


def test_an_unstorable_input_to_embed_is_a_400_with_a_ledger_row(client):
    response = _post(client, "/v1/embeddings", {"input": ["fine", "not\u0000fine"]})
    assert response.status_code == 400, response.content
    assert "input[1]" in response.json()["error"]["message"]
    _one_refusal(feature="embed")


def test_an_unpaired_surrogate_is_refused_before_the_gateway(fake, models, client):
    """pydantic refuses it (a validation error, like any malformed parameter: nothing reaches the gateway)."""
    response = _post(client, "/v1/chat/completions", {"model": "test\ud800small", "messages": MESSAGES})
    assert response.status_code == 400 and response.json()["error"]["param"] == "model"
    assert fake.requests() == []


def test_the_gateway_itself_refuses_and_records(fake, models, caller):
    """Callers inside (crews, chat, ask) get the same refusal: NUL and unpaired surrogates alike."""
    with pytest.raises(BadRequest):
        gateway.chat(caller=caller, model="test-small\x00", request=ChatRequest(messages=MESSAGES))
    with pytest.raises(BadRequest):
        gateway.chat(caller=caller, model="test\udfffsmall", request=ChatRequest(messages=MESSAGES))
    with pytest.raises(BadRequest):
        stream = gateway.chat_stream(caller=caller, model="test-small", request=ChatRequest(
            messages=[{"role": "user", "content": "\ud83d"}]))  # fmt: skip
        next(stream)
    assert sorted(LLMCall.all_orgs.values_list("model_requested", flat=True)) == [
        "test-small", "test-small\ufffd", "test\ufffdsmall"]  # fmt: skip
    assert set(LLMCall.all_orgs.values_list("error_class", flat=True)) == {"bad_request"}


def test_our_generate_endpoint_refuses_it_in_our_error_shape(fake, models, client):
    response = _post(client, "/api/v1/generate", {"model": "test-small", "prompt": "Hi\u0000"})
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] in ("invalid", "malformed_request")
    assert fake.requests() == []
