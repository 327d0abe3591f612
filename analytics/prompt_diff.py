"""A prompt version against the one before it, line by line (difflib), for the editor and the API. The page
renders the lines as text in elements of its own (Django escapes them): nothing of a prompt is ever HTML."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

from saas.llm.models import Prompt, PromptVersion


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "same", "added", "removed", "gap"
    text: str
    old: int | None = None  # line numbers, 1-based
    new: int | None = None
    # For a changed line: its text in pieces, each (text, changed), the words that differ from the other side.
    segments: tuple[tuple[str, bool], ...] = ()


TOKEN = re.compile(r"\s+|\w+|[^\w\s]")


def _word_marks(old: list[str], new: list[str]) -> tuple[list[tuple[tuple[str, bool], ...]], ...]:
    """Each line of a replaced block in pieces, the words that changed marked (a word diff over the block)."""

    def tokens(lines: list[str]) -> list[str]:
        out: list[str] = []
        for line in lines:
            out += [*TOKEN.findall(line), "\n"]
        return out

    a, b = tokens(old), tokens(new)
    changed_a, changed_b = [True] * len(a), [True] * len(b)
    for i, j, size in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_matching_blocks():
        changed_a[i : i + size] = [False] * size
        changed_b[j : j + size] = [False] * size

    def lines(toks: list[str], changed: list[bool]) -> list[tuple[tuple[str, bool], ...]]:
        result: list[tuple[tuple[str, bool], ...]] = []
        pieces: list[tuple[str, bool]] = []
        for word, mark in zip(toks, changed, strict=True):
            if word == "\n":
                result.append(_merged(pieces))
                pieces = []
            elif pieces and pieces[-1][1] == (mark and not word.isspace()):
                pieces[-1] = (pieces[-1][0] + word, pieces[-1][1])
            else:
                pieces.append((word, mark and not word.isspace()))
        return result

    return lines(a, changed_a), lines(b, changed_b)


def _merged(pieces: list[tuple[str, bool]]) -> tuple[tuple[str, bool], ...]:
    """Changed words separated only by spaces read as one change."""
    out: list[tuple[str, bool]] = []
    for index, (text, changed) in enumerate(pieces):
        between = (not changed and text.isspace() and 0 < index < len(pieces) - 1
                   and pieces[index - 1][1] and pieces[index + 1][1])  # fmt: skip
        if (changed or between) and out and out[-1][1]:
            out[-1] = (out[-1][0] + text, True)
        else:
            out.append((text, changed or between))
    return tuple(out)


@dataclass
class VersionDiff:
    version: PromptVersion | None
    previous: PromptVersion | None
    lines: list[DiffLine] = field(default_factory=list)
    unified: str = ""

    @property
    def added(self) -> int:
        return sum(1 for line in self.lines if line.kind == "added")

    @property
    def removed(self) -> int:
        return sum(1 for line in self.lines if line.kind == "removed")

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


def previous_of(*, org: Any, version: PromptVersion) -> PromptVersion | None:
    """The version before: the same prompt's previous number; for an org's first version, the operator
    default's version in production (what the org used before overriding it)."""
    earlier = (
        PromptVersion.all_orgs.filter(prompt_id=version.prompt_id, number__lt=version.number)
        .order_by("-number").select_related("prompt").first()
    )  # fmt: skip
    if earlier is not None or version.organization_id is None:
        return earlier
    default = Prompt.all_orgs.filter(organization__isnull=True, key=version.prompt.key).select_related("production")
    found = default.first()
    return found.production if found is not None else None


def text_diff(old: str, new: str, *, context: int = 3) -> list[DiffLine]:
    """The lines of `new` against `old`: unchanged lines around each change (`context` of them), gaps elided."""
    a, b = old.splitlines(), new.splitlines()
    lines: list[DiffLine] = []
    for group in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_grouped_opcodes(context):
        if lines:
            lines.append(DiffLine("gap", "…"))
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                lines += [DiffLine("same", a[i], i + 1, j1 + (i - i1) + 1) for i in range(i1, i2)]
                continue
            old_marks = new_marks = None
            if tag == "replace":
                old_marks, new_marks = _word_marks(a[i1:i2], b[j1:j2])
            for i in range(i1, i2):
                lines.append(DiffLine("removed", a[i], i + 1, None, old_marks[i - i1] if old_marks else ()))
            for j in range(j1, j2):
                lines.append(DiffLine("added", b[j], None, j + 1, new_marks[j - j1] if new_marks else ()))
    return lines


def version_diff(*, org: Any, version: PromptVersion, previous: PromptVersion | None = None) -> VersionDiff:
    previous = previous if previous is not None else previous_of(org=org, version=version)
    old = previous.text if previous is not None else ""
    return _diff(version, previous, old, version.text)


def draft_diff(*, previous: PromptVersion | None, text: str) -> VersionDiff:
    """A text not yet saved against the version it would follow (the editor's preview)."""
    return _diff(None, previous, previous.text if previous is not None else "", text)


def _diff(version: PromptVersion | None, previous: PromptVersion | None, old: str, new: str) -> VersionDiff:
    before = f"v{previous.number}" if previous is not None else "empty"
    after = f"v{version.number}" if version is not None else "draft"
    unified = "\n".join(difflib.unified_diff(old.splitlines(), new.splitlines(), before, after, lineterm=""))
    return VersionDiff(version, previous, text_diff(old, new), unified)
