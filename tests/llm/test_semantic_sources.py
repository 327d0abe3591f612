"""The semantic cache answers a question of the same meaning only over the passages its answer cites, with
its [n] markers renumbered to the new prompt's passages (a cached answer never cites the wrong passage)."""

import pytest

from saas.llm import gateway
from saas.llm.caches import Sources
from saas.llm.models import LLMCall, SemanticCacheEntry
from saas.llm.providers import ChatRequest

pytestmark = pytest.mark.django_db
QUESTION = "How long do refunds take?"
PASSAGES = {"A": "Travel is reimbursed in 14 days.", "B": "Refunds take 30 days.", "C": "The office opens at 8."}


def _ask(caller, ids: str) -> gateway.GatewayResult:
    sources = "\n".join(f"[{n}] {PASSAGES[i]}" for n, i in enumerate(ids, start=1))
    request = ChatRequest(
        [{"role": "system", "content": f"Sources:\n{sources}"}, {"role": "user", "content": QUESTION}]
    )
    return gateway.chat(caller=caller, model="test-small", request=request,
                        sources=Sources(scope="ask:kb.1", chunk_ids=tuple(ids)))  # fmt: skip


def test_a_cached_answer_is_used_only_when_its_cited_passages_are_retrieved_again(fake, models, caller):
    fake.script("fake-small", {"reply": "Refunds take 30 days [2]."})
    first = _ask(caller, "AB")
    assert not first.cached and first.text == "Refunds take 30 days [2]."
    entry = SemanticCacheEntry.all_orgs.get()
    assert (entry.source_chunk_ids, entry.cited_chunk_ids) == (["A", "B"], ["B"])

    moved = _ask(caller, "CBA")  # B is retrieved again, still as [2]
    assert moved.cached and moved.text == "Refunds take 30 days [2]."
    first_now = _ask(caller, "BC")  # B is now the first passage: the marker follows it
    assert first_now.cached and first_now.text == "Refunds take 30 days [1]."
    assert LLMCall.all_orgs.get(pk=first_now.call_id).cache == "semantic"

    missing = _ask(caller, "AC")  # the passage the answer rests on is not retrieved: no cached answer
    assert not missing.cached and LLMCall.all_orgs.get(pk=missing.call_id).cache == "miss"
    assert len(fake.requests()) == 2


def test_an_answer_citing_nothing_is_reused_only_over_the_very_same_passages(fake, models, caller):
    fake.script("fake-small", {"reply": "I could not find it in the documents."})
    assert not _ask(caller, "AC").cached
    assert _ask(caller, "CA").cached  # the same passages in another order
    assert not _ask(caller, "ACB").cached  # a new passage might hold the answer
