"""Whether a sentence of an answer says what its cited passages say, beyond being about the same thing.

An embedding's cosine says a sentence and a passage are on one topic: "Refunds take 90 days" sits as close to
"Refunds take 30 days" as the correct sentence does. So a sentence that is close enough must also carry no fact
its cited passages lack: every number (amounts, durations, percentages, years; "1,000" and "1000" are one
number), every month and weekday, every name (a capitalised word inside the sentence), and the same polarity as
the passage sentence it rests on (a "not" or "never" the passage does not have, or the other way round).
"""

import re
from collections.abc import Iterable

_NUMBER = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\w)|(?<![\w.])\d+(?:\.\d+)?")
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_CALENDAR = {
    "january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november",
    "december", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
}  # fmt: skip
_NEGATIONS = {"not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "without", "cannot"}
# Capitalised words that are not names (they start clauses, or are capitalised by convention).
_NOT_NAMES = {"i", "the", "a", "an", "this", "that", "these", "those", "it", "its", "we", "you", "they", "he",
              "she", "if", "in", "on", "at", "for", "and", "or", "but", "to", "of", "by", "with", "as", "all",
              "each", "every", "yes", "no", "our", "your", "their"}  # fmt: skip
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")


def _numbers(text: str) -> set[str]:
    values = set()
    for match in _NUMBER.findall(text):
        value = match.replace(",", "")
        values.add(value.rstrip("0").rstrip(".") if "." in value else value.lstrip("0") or "0")
    return values


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _names(sentence: str) -> set[str]:
    """Capitalised words after the first word (the first is capitalised anyway), and all-caps words."""
    words = _words(sentence)
    return {
        w.lower()
        for i, w in enumerate(words)
        if ((i > 0 and w[0].isupper()) or (len(w) > 1 and w.isupper()))
        and w.lower() not in _NOT_NAMES
        and w.lower() not in _CALENDAR
    }


def _negated(text: str) -> bool:
    lowered = [w.lower() for w in _words(text)]
    return any(w in _NEGATIONS or w.endswith("n't") for w in lowered)


def _closest_sentence(sentence: str, passages: Iterable[str]) -> str:
    claimed = {w.lower() for w in _words(sentence)} - _NEGATIONS
    candidates = [s for p in passages for s in _SENTENCE_SPLIT.split(" ".join(p.split())) if s.strip()]
    if not candidates:
        return ""

    def overlap(candidate: str) -> float:
        words = {w.lower() for w in _words(candidate)} - _NEGATIONS
        return len(claimed & words) / (len(claimed | words) or 1)

    return max(candidates, key=overlap)


def missing_facts(sentence: str, passages: list[str]) -> list[str]:
    """What the sentence states that its cited passages do not (empty when every fact is there)."""
    source = " ".join(passages)
    source_words = {w.lower() for w in _words(source)}
    problems = [f"the number {n}" for n in sorted(_numbers(sentence) - _numbers(source))]
    problems += [f"{w.capitalize()}" for w in sorted({w.lower() for w in _words(sentence)} & _CALENDAR - source_words)]
    problems += [f"the name {w}" for w in sorted(_names(sentence) - source_words)]
    closest = _closest_sentence(sentence, passages)
    if closest and _negated(sentence) != _negated(closest):
        problems.append("a negation" if _negated(sentence) else "a missing negation")
    return problems
