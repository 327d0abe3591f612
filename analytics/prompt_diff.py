"""A prompt version against the one before it, line by line (difflib), for the editor and the API. The page
renders the lines as text in elements of its own (Django escapes them): nothing of a prompt is ever HTML."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from saas.llm.models import Prompt, PromptVersion


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "same", "added", "removed", "gap"
    text: str
    old: int | None = None  # line numbers, 1-based
    new: int | None = None


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
            if tag in ("replace", "delete"):
                lines += [DiffLine("removed", a[i], i + 1, None) for i in range(i1, i2)]
            if tag in ("replace", "insert"):
                lines += [DiffLine("added", b[j], None, j + 1) for j in range(j1, j2)]
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
