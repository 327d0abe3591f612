"""The eval scorers: pure functions from an answer (and what the case expects) to a Score. A score is 1 for a
pass and 0 for a failure, or in between where the measure is a share (groundedness, a judge's grade); None
means the scorer does not apply to the case (nothing expected of that kind) and it counts for nothing.

Reasons say why, in a sentence that never repeats the team's content (they are stored in plain text).
"""

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import regex
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

MARKER = re.compile(r"\[(\d{1,3})\]")
QUOTED = re.compile(r"[\"“]([^\"”]{8,300})[\"”]")  # a span the answer puts in quotation marks
REGEX_TIMEOUT = 0.2  # seconds: a case's pattern is an admin's input, and some patterns never finish
MAX_PATTERN = 500
# The score at or above which a case passes on each scorer (binary scorers: 1).
PASS_MARK = {"groundedness": 0.75, "judge": 0.5}
SCORERS = ("cited_document", "citations", "groundedness", "answer", "json_schema", "judge")
LABELS = {
    "cited_document": "Cited document", "citations": "Citation correctness", "groundedness": "Groundedness",
    "answer": "Expected answer", "json_schema": "JSON schema", "judge": "Judge",
}  # fmt: skip


@dataclass(frozen=True)
class Score:
    value: float | None
    reason: str = ""

    @property
    def applies(self) -> bool:
        return self.value is not None


NOT_APPLICABLE = Score(None)


def _plain(text: str) -> str:
    return " ".join(MARKER.sub(" ", text).split())


def _normal(text: str) -> str:
    return " ".join(text.split()).casefold()


def cited_document(citations: Iterable[Mapping[str, Any]], expected_document_id: Any) -> Score:
    """Whether the answer cites the document the case expects (any of its passages)."""
    if not expected_document_id:
        return NOT_APPLICABLE
    cited = {str(c.get("document_id")) for c in citations}
    if str(expected_document_id) in cited:
        return Score(1.0, "The expected document is cited.")
    if not cited:
        return Score(0.0, "The answer cites no document.")
    return Score(0.0, f"The answer cites {len(cited)} other document{'s' if len(cited) != 1 else ''}, not the "
                      "expected one.")  # fmt: skip


def citation_correctness(answer: str, citations: Iterable[Mapping[str, Any]], passages: Mapping[str, str]) -> Score:
    """Each citation marker in the answer points at a source that was given, and each cited passage contains
    what the answer quotes from it: the citation's quote (the passage sentences the citing sentences rest on)
    and any span the citing sentences put in quotation marks. `passages`: chunk id -> the passage's text as
    stored now. The share of markers that hold up; no markers: not applicable (cited_document and groundedness
    say whether an answer should have cited)."""
    by_marker = {int(c["marker"]): c for c in citations if c.get("marker") is not None}
    sentences = re.findall(r"[^.!?\n]+[.!?]*(?:\s*\[\d{1,3}\])*", answer)
    markers = [int(m) for m in MARKER.findall(answer)]
    if not markers:
        return NOT_APPLICABLE
    wrong: set[int] = set()
    for number in set(markers):
        citation = by_marker.get(number)
        passage = _normal(passages.get(str(citation.get("chunk_id")), "")) if citation else ""
        if not passage:
            wrong.add(number)  # a source that was never given, or a passage that is gone
            continue
        quotes = [q for q in str(citation.get("quote") or "").split(" … ") if q.strip()]  # type: ignore[union-attr]
        quoted = [span for s in sentences if f"[{number}]" in s for span in QUOTED.findall(s)]
        if any(_normal(q) not in passage for q in [*quotes, *quoted]):
            wrong.add(number)
    good = sum(1 for m in markers if m not in wrong)
    if not wrong:
        return Score(1.0, f"All {len(markers)} citation{'s' if len(markers) != 1 else ''} hold up.")
    return Score(round(good / len(markers), 3),
                 f"{len(markers) - good} of {len(markers)} citations point at a passage that does not say what "
                 "is quoted, or at no source.")  # fmt: skip


def groundedness(value: float | None, unsupported: int = 0) -> Score:
    """The ask path's own measure (documents/grounding.py): the share of sentences their citations support."""
    if value is None:
        return NOT_APPLICABLE
    if unsupported:
        return Score(float(value), f"{unsupported} sentence{'s are' if unsupported != 1 else ' is'} not supported "
                                   "by what it cites.")  # fmt: skip
    return Score(float(value), "Every sentence is supported by what it cites.")


def check_pattern(pattern: str) -> None:
    """Raises ValueError when a case's regular expression cannot be used."""
    if len(pattern) > MAX_PATTERN:
        raise ValueError(f"A pattern is at most {MAX_PATTERN} characters.")
    try:
        regex.compile(pattern)
    except regex.error as exc:
        raise ValueError(f"Not a valid regular expression: {exc}.") from exc


def expected_answer(answer: str, expected: str, match: str) -> Score:
    """The answer (its citation markers left out) against the expected answer: `exact` (same words, case and
    spacing aside), `contains`, or `regex` (searched, with a time limit: a runaway pattern fails the case)."""
    if not expected.strip():
        return NOT_APPLICABLE
    plain = _plain(answer)
    if match == "exact":
        ok = _normal(plain).rstrip(".") == _normal(expected).rstrip(".")
        return Score(1.0 if ok else 0.0, "The answer is the expected one." if ok else "The answer is not the "
                                          "expected one.")  # fmt: skip
    if match == "regex":
        try:
            check_pattern(expected)
            found = regex.search(expected, plain, timeout=REGEX_TIMEOUT)
        except ValueError as exc:
            return Score(0.0, str(exc))
        except TimeoutError:
            return Score(0.0, "The pattern took too long to match and was stopped.")
        return Score(1.0 if found else 0.0, "The pattern matches." if found else "The pattern does not match.")
    ok = _normal(expected) in _normal(plain)
    return Score(1.0 if ok else 0.0, "The answer contains the expected text." if ok else "The answer does not "
                                      "contain the expected text.")  # fmt: skip


def check_schema(schema: Any) -> None:
    """Raises ValueError when a case's JSON Schema is not one."""
    if not isinstance(schema, dict):
        raise ValueError("A JSON Schema is an object.")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"Not a valid JSON Schema: {exc.message}.") from exc
    except RecursionError as exc:
        raise ValueError("The JSON Schema is nested too deeply.") from exc


def json_schema(answer: str, schema: Any) -> Score:
    """The answer parses as JSON and validates against the case's schema (the first errors, by place)."""
    if schema is None:
        return NOT_APPLICABLE
    try:
        check_schema(schema)
    except ValueError as exc:
        return Score(0.0, str(exc))
    try:
        value = json.loads(answer)
    except (ValueError, RecursionError):
        return Score(0.0, "The answer is not JSON.")
    try:
        errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.absolute_path))[:3]
    except RecursionError:
        return Score(0.0, "The answer is nested too deeply to check.")
    if not errors:
        return Score(1.0, "The answer is valid for the schema.")
    places = "; ".join(f"{e.validator} at /{'/'.join(str(p) for p in e.absolute_path)}" for e in errors)
    return Score(0.0, f"The answer does not fit the schema ({places}).")


JUDGE_PROMPT = (
    "You grade an answer against a rubric. Reply with one line: PASS or FAIL, then a colon and one short "
    "reason. Judge only by the rubric."
)
VERDICT = re.compile(r"\b(PASS|FAIL)\b|\b([1-5])\s*/\s*5\b", re.IGNORECASE)


def judge_messages(question: str, answer: str, rubric: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": JUDGE_PROMPT},
        {"role": "user", "content": f"Rubric:\n{rubric}\n\nQuestion:\n{question}\n\nAnswer:\n{answer}"},
    ]


def judge_verdict(reply: str) -> Score:
    """A judge model's reply read as a score: PASS / FAIL, or a grade out of 5; anything else is a failure
    to judge (the case fails on this scorer, with that reason)."""
    found = VERDICT.search(reply)
    if found is None:
        return Score(0.0, "The judge's reply held no verdict.")
    if found.group(1):
        passed = found.group(1).upper() == "PASS"
        return Score(1.0 if passed else 0.0, "The judge passed the answer." if passed else "The judge failed the "
                                             "answer.")  # fmt: skip
    grade = int(found.group(2))
    return Score(round((grade - 1) / 4, 3), f"The judge graded it {grade}/5.")


def passed(scores: Mapping[str, float | None]) -> bool:
    """A case passes when every scorer that applies is at its pass mark (no scorer applies: it passes)."""
    return all(value >= PASS_MARK.get(name, 1.0) for name, value in scores.items() if value is not None)


def averages(results: Iterable[Mapping[str, float | None]]) -> dict[str, float]:
    """Each scorer's average over the cases it applies to."""
    sums: dict[str, list[float]] = {}
    for scores in results:
        for name, value in scores.items():
            if value is not None:
                sums.setdefault(name, []).append(float(value))
    return {name: round(sum(values) / len(values), 4) for name, values in sums.items() if values}
