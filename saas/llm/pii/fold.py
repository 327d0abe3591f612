# ruff: noqa: RUF002  (look-alike characters are the subject of this module)
"""Text as the detectors see it: Unicode digits and separators folded to ASCII, with a map back to the original.

Detection runs on a folded copy (NFKC, every Unicode decimal digit as its ASCII digit, every dash as "-",
zero-width characters and soft hyphens dropped) so that `４１１１ １１１１…`, `4111\u00a01111…` or
`020\u20117946\u20110958` are found like their ASCII forms; the masked text keeps the caller's original
characters everywhere outside the masked spans. ASCII text (most prompts) is used as it is, without a copy.
"""

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"), "-")
_INVISIBLE = frozenset("\u00ad\u180e\u200b\u200c\u200d\u2060\ufeff")
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


@lru_cache(maxsize=8192)
def fold_char(char: str) -> str:
    if char in _INVISIBLE:
        return ""
    digit = unicodedata.decimal(char, None)
    if digit is not None:
        return str(digit)
    return unicodedata.normalize("NFKC", char).translate(_DASHES)


@dataclass(frozen=True, slots=True)
class Folded:
    text: str
    # Original index of the character each folded character came from (starts) and one past it (ends);
    # None when folding kept every length (the common case), so that folded offsets are original offsets.
    starts: list[int] | None = None
    ends: list[int] | None = None

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        if self.starts is None or self.ends is None:
            return start, end
        return self.starts[start], self.ends[end - 1]


def fold(text: str) -> Folded:
    if text.isascii():
        return Folded(text)
    pieces: list[str] = []
    same_length = True
    last = 0
    runs = list(_NON_ASCII.finditer(text))
    for run in runs:
        pieces.append(text[last : run.start()])
        for char in run.group():
            folded = fold_char(char)
            same_length = same_length and len(folded) == 1
            pieces.append(folded)
        last = run.end()
    pieces.append(text[last:])
    if same_length:
        return Folded("".join(pieces))
    starts: list[int] = []
    ends: list[int] = []
    last = 0
    for run in runs:
        starts.extend(range(last, run.start()))
        ends.extend(range(last + 1, run.start() + 1))
        for index in range(run.start(), run.end()):
            width = len(fold_char(text[index]))
            starts.extend([index] * width)
            ends.extend([index + 1] * width)
        last = run.end()
    starts.extend(range(last, len(text)))
    ends.extend(range(last + 1, len(text) + 1))
    return Folded("".join(pieces), starts, ends)
