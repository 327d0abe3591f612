"""The scorers are pure: each passes what it should and fails what it should, with a reason that never repeats
the team's content."""

import pytest

from analytics import scorers

CHUNK_A, CHUNK_B = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
DOC_A, DOC_B = "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa", "bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb"
PASSAGES = {
    CHUNK_A: "Refunds take 30 days from the purchase date. Customers receive an email when the refund is sent.",
    CHUNK_B: "The office opens at 8 am. Parking is free for staff.",
}


def _citation(marker, chunk, document, quote):
    return {"marker": marker, "chunk_id": chunk, "document_id": document, "quote": quote}


def test_cited_document_hit_and_miss():
    cited = [_citation(1, CHUNK_A, DOC_A, "")]
    assert scorers.cited_document(cited, DOC_A).value == 1.0
    miss = scorers.cited_document(cited, DOC_B)
    assert miss.value == 0.0 and "other document" in miss.reason
    assert scorers.cited_document([], DOC_A).value == 0.0
    assert not scorers.cited_document(cited, None).applies


def test_citation_correctness_holds_when_each_passage_says_what_is_quoted():
    answer = "Refunds take 30 days from the purchase date. [1] The office opens at 8 am. [2]"
    citations = [
        _citation(1, CHUNK_A, DOC_A, "Refunds take 30 days from the purchase date."),
        _citation(2, CHUNK_B, DOC_B, "The office opens at 8 am."),
    ]
    assert scorers.citation_correctness(answer, citations, PASSAGES).value == 1.0


def test_citation_correctness_fails_a_quote_the_passage_does_not_hold():
    answer = "Refunds take 90 days. [1] The office opens at 8 am. [2]"
    citations = [
        _citation(1, CHUNK_A, DOC_A, "Refunds take 90 days."),  # the passage says 30
        _citation(2, CHUNK_B, DOC_B, "The office opens at 8 am."),
    ]
    score = scorers.citation_correctness(answer, citations, PASSAGES)
    assert score.value == 0.5 and "1 of 2" in score.reason and "90" not in score.reason


def test_citation_correctness_fails_a_marker_without_a_source_and_a_quoted_span_not_in_the_passage():
    assert scorers.citation_correctness("Refunds are quick. [3]", [], PASSAGES).value == 0.0
    quoted = 'The handbook says "refunds are processed instantly" for everyone. [1]'
    citations = [_citation(1, CHUNK_A, DOC_A, "Refunds take 30 days from the purchase date.")]
    assert scorers.citation_correctness(quoted, citations, PASSAGES).value == 0.0
    # A passage deleted since: nothing left to hold the quote.
    assert scorers.citation_correctness("Refunds take 30 days. [1]", citations, {}).value == 0.0


def test_citation_correctness_does_not_apply_to_an_answer_without_markers():
    assert not scorers.citation_correctness("Refunds take 30 days.", [], PASSAGES).applies


def test_groundedness_passes_on_the_ask_paths_figure():
    assert scorers.groundedness(1.0).value == 1.0
    low = scorers.groundedness(0.0, unsupported=2)
    assert low.value == 0.0 and "2 sentences" in low.reason
    assert not scorers.groundedness(None).applies


@pytest.mark.parametrize(
    ("answer", "expected", "match", "value"),
    [
        ("Refunds take 30 days. [1]", "refunds take 30 days", "exact", 1.0),
        ("Refunds take 30 days, usually. [1]", "Refunds take 30 days", "exact", 0.0),
        ("Refunds take 30 days from purchase. [1]", "30 DAYS", "contains", 1.0),
        ("Refunds take 90 days. [1]", "30 days", "contains", 0.0),
        ("Refunds take 30 days. [1]", r"\b3\d days\b", "regex", 1.0),
        ("Refunds take 90 days. [1]", r"\b3\d days\b", "regex", 0.0),
        ("[1] is cited", r"\[1\]", "regex", 0.0),  # markers are not part of the answer's text
    ],
)
def test_expected_answer(answer, expected, match, value):
    assert scorers.expected_answer(answer, expected, match).value == value


def test_expected_answer_does_not_apply_without_one_and_a_runaway_pattern_fails_in_time():
    assert not scorers.expected_answer("anything", "  ", "contains").applies
    runaway = scorers.expected_answer("a" * 60 + "!", r"(a|aa)+$", "regex")
    assert runaway.value == 0.0 and "too long" in runaway.reason
    broken = scorers.expected_answer("anything", "(unclosed", "regex")
    assert broken.value == 0.0 and "Not a valid regular expression" in broken.reason


SCHEMA = {"type": "object", "properties": {"days": {"type": "integer"}}, "required": ["days"]}


def test_json_schema_validity():
    assert scorers.json_schema('{"days": 30}', SCHEMA).value == 1.0
    wrong = scorers.json_schema('{"days": "thirty"}', SCHEMA)
    assert wrong.value == 0.0 and "type at /days" in wrong.reason and "thirty" not in wrong.reason
    assert scorers.json_schema('{"weeks": 4}', SCHEMA).value == 0.0
    assert scorers.json_schema("Refunds take 30 days.", SCHEMA).reason == "The answer is not JSON."
    assert scorers.json_schema('{"days": 30}', {"type": "no-such-type"}).value == 0.0
    assert not scorers.json_schema("{}", None).applies


@pytest.mark.parametrize(
    ("reply", "value"),
    [("PASS: cites the policy", 1.0), ("fail: wrong number", 0.0), ("Grade: 4/5", 0.75), ("1/5", 0.0),
     ("I think it is fine", 0.0)],
)  # fmt: skip
def test_judge_verdicts(reply, value):
    assert scorers.judge_verdict(reply).value == value


def test_a_case_passes_when_every_applicable_scorer_is_at_its_mark_and_averages_skip_what_does_not_apply():
    assert scorers.passed({"groundedness": 0.8, "cited_document": 1.0})
    assert not scorers.passed({"groundedness": 0.5, "cited_document": 1.0})
    assert not scorers.passed({"answer": 0.0})
    assert scorers.passed({})
    assert scorers.averages([{"groundedness": 1.0, "answer": 0.0}, {"groundedness": 0.5}, {}]) == {
        "groundedness": 0.75, "answer": 0.0,
    }  # fmt: skip
