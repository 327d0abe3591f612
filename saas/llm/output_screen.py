"""The output guardrails on a streamed answer, fed one delta at a time (OutputScreen): `screen_output`'s findings
on the answer's latest OUTPUT_WINDOW characters after each delta, in CPU proportional to the delta."""

import re
from functools import cache, lru_cache

from saas.llm.guardrails import (
    MAX_SCREENED_CHARS,
    MODERATION_RULES,
    OFF,
    OUTPUT,
    Finding,
    Policy,
    finding_action,
    normalise,
)

OUTPUT_WINDOW = 600  # characters of a streamed answer the output guardrails look at after each delta

# Places where `normalise` splits cleanly: normalise(a + " " + b) == normalise(a) + " " + normalise(b) when `a`
# ends with two ASCII letters or digits and `b` starts with one (no spaced-letter run crosses the space), and
# normalise(a + "\n" + b) == normalise(a) + "\n" + normalise(b) when the characters either side of the line break
# are visible ASCII (no blank line to drop). Every other step of `normalise` (compatibility forms, accents,
# format characters, case) maps one character at a time. Neither side is ever blank, so the joins are fixed.
_CUT = re.compile(r"(?<=[A-Za-z0-9]{2}) (?=[A-Za-z0-9])|(?<=[!-~])\n(?=[!-~])")
_MIN_SEGMENT = 16  # raw characters between the cuts kept (fewer, longer segments: less work as the window slides)


@cache
def _reach(pattern: re.Pattern[str]) -> int | None:
    """The longest text a match can cover (a `\\w+` counted as one character: a word never crosses a cut, and a
    word cut short at a search's end still matches), or None when unbounded (then the whole window is searched)."""
    import re._parser as sre_parse  # type: ignore[import-not-found]

    width = sre_parse.parse(pattern.pattern.replace(r"\w+", r"\w")).getwidth()[1]
    return None if width >= sre_parse.MAXREPEAT else int(width)


@cache
def _moderation_rules(mode: str) -> list[tuple[Finding, re.Pattern[str], int | None]]:
    return [(Finding("moderation", OUTPUT, mode, f"local:{c}"), p, _reach(p)) for c, p in MODERATION_RULES]


@lru_cache(maxsize=4096)
def _keyword_rule(keyword: str) -> tuple[Finding, re.Pattern[str], int | None] | None:
    needle = normalise(keyword)
    if not needle:
        return None
    pattern = re.compile(rf"(?<!\w){re.escape(needle)}(?!\w)")
    return Finding("denied_keyword", OUTPUT, "blocked", keyword), pattern, len(needle)


class OutputScreen:
    """`screen_output` on a streamed answer's latest OUTPUT_WINDOW characters after each delta, in CPU
    proportional to the delta rather than the window, with the same findings at the same delta.

    The window's normalised text is kept as segments between cuts (see _CUT), each normalised once; only the first
    segment (when the window slid) and the last one (it grew) are normalised again. A rule or keyword is searched
    only where a match that the previous window lacked can lie: near the window's start (when it slid) and from
    its reach before the part that changed at the end. A rule already found is not searched again: its finding
    was returned once (the caller keeps it), and a blocking one ends the stream."""

    def __init__(self, policy: Policy, *, window: int = OUTPUT_WINDOW) -> None:
        if window > MAX_SCREENED_CHARS:
            raise ValueError("normalise screens the head and tail of longer texts: the segments would not join")
        self.window = window
        self.raw = ""  # the answer's latest `window` characters (call.withhold records them)
        self.base = 0  # the stream offset of raw[0]
        self.cuts: list[tuple[int, str]] = []  # (stream offset, " " or "\n") of the cuts kept inside the window
        self.pieces: list[int] = []  # lengths in `middle` of the segment after cuts[j] (with its join), j < last
        self.middle = ""  # the normalised segments between the first and last cut, each after its join character
        self.text = ""  # the window normalised (what screen_output would search)
        self.left = 0  # the length of its first segment's part
        self.rules: list[tuple[Finding, re.Pattern[str], int | None]] = []
        if policy.active and policy.moderation != OFF:
            self.rules += _moderation_rules(finding_action(policy.moderation))
        for keyword in policy.denied_keywords if policy.active else ():
            if rule := _keyword_rule(keyword):
                self.rules.append(rule)

    def feed(self, delta: str) -> list[Finding]:
        """The findings the window gains with this delta: those `screen_output` finds on the window now, less the
        ones returned before."""
        if not delta:
            return []
        end_before = self.base + len(self.raw)
        raw = self.raw + delta
        if len(raw) > self.window:
            raw = raw[-self.window :]
        self.raw = raw
        base_before, self.base = self.base, end_before + len(delta) - len(raw)
        first_before = self.cuts[0][0] if self.cuts else None
        last_before = self.cuts[-1][0] if self.cuts else None
        text_before, left_before = self.text, self.left
        self._cut(end_before)
        while self.cuts and self.cuts[0][0] - (2 if self.cuts[0][1] == " " else 1) < self.base:
            self.cuts.pop(0)
            if self.pieces:
                left_before += self.pieces[0]
                self.middle = self.middle[self.pieces.pop(0) :]
        if not self.cuts:
            self.text, left, changed = normalise(raw), 0, None
        else:
            first = normalise(raw[: self.cuts[0][0] - self.base])
            at, kind = self.cuts[-1]
            self.text = first + self.middle + kind + normalise(raw[at + 1 - self.base :])
            left = len(first)
            if last_before == at:
                changed = left + len(self.middle)  # the last segment grew
            elif len(self.cuts) > 1 and self.cuts[-2][0] == last_before:
                changed = left + len(self.middle) - self.pieces[-1]  # a new cut closed the segment that grew
            else:
                changed = None  # no cut before this delta, or the window slid past it: search it all
        self.left = left
        if not self.rules:
            return []
        # Where the window's start moved: when the first segment's text is the end of what stood before the same
        # cut, a match the previous window lacked can only start at 0 (a word cut short now starts the text);
        # otherwise (the cut changed how the start folds, e.g. a spaced-out word) near the start.
        slid = self.base != base_before or (self.cuts[0][0] if self.cuts else None) != first_before
        head = self.text[:left]
        at_start = slid and text_before[:left_before].endswith(head)
        found = []
        for rule in list(self.rules):
            finding, pattern, reach = rule
            if reach is None or changed is None:
                hit = pattern.search(self.text) is not None
            else:
                hit = pattern.search(self.text, max(0, changed - reach - 2)) is not None
                if hit or not slid:
                    pass
                elif at_start:
                    hit = pattern.match(self.text) is not None
                elif pattern.search(self.text, 0, left + reach + 3):
                    hit = pattern.search(self.text) is not None  # the cut-short search may have matched spuriously
            if hit:
                found.append(finding)
                self.rules.remove(rule)
        return found

    def _cut(self, end_before: int) -> None:
        """Keep the last cut the delta completes, when far enough from the previous one; the segment it closes is
        normalised once."""
        last = None
        for last in _CUT.finditer(self.raw, max(0, end_before - self.base - 3)):  # noqa: B007 (the last is kept)
            pass
        if last is None:
            return
        at, kind = self.base + last.start(), last.group(0)
        if self.cuts:
            previous, joint = self.cuts[-1]
            if at - previous < _MIN_SEGMENT:
                return
            piece = joint + normalise(self.raw[previous + 1 - self.base : at - self.base])
            self.middle += piece
            self.pieces.append(len(piece))
        self.cuts.append((at, kind))
