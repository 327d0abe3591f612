"""Personal data out, placeholders in, and back again.

Emails (IDN and quoted local parts too), phone numbers (international, and national in the org's regions),
card numbers (any separator, Luhn-valid), IBANs (any case and spacing, checksum-valid), IP addresses (IPv4,
IPv6 compressed or with an embedded IPv4) and, when the org switches it on, person names announced by a cue
(names.py) are replaced by stable placeholders such as [EMAIL_1] before a request leaves; the same value gets
the same placeholder for the whole conversation, and `unmask` restores the values in the reply the user sees.

Detection runs on a folded copy of the text (fold.py: Unicode digits, spaces and dashes as ASCII), so
fullwidth digits or non-breaking spaces do not hide anything; the masked text keeps the caller's original
characters outside the masked spans, and unmasking restores each value exactly as it was written.
"""

import re
from dataclasses import dataclass, field

from django.conf import settings

from saas.llm.pii import detectors
from saas.llm.pii.detectors import Hit
from saas.llm.pii.fold import fold
from saas.llm.pii.names import names

KINDS = ("EMAIL", "IBAN", "CARD", "IP", "PHONE", "NAME")  # also the order in which overlapping hits win
PLACEHOLDER = re.compile(r"\[(?:EMAIL|PHONE|CARD|IBAN|IP|NAME)_\d+\]")
_DIGIT = re.compile(r"\d")


@dataclass(frozen=True)
class Options:
    """What an org's policy asks for: the regions national phone numbers are read in (tried in order; empty:
    the server's LLM_PII_PHONE_REGIONS) and whether person names are masked."""

    phone_regions: tuple[str, ...] = ()
    names: bool = False

    @property
    def regions(self) -> tuple[str, ...]:
        return self.phone_regions or tuple(settings.LLM_PII_PHONE_REGIONS)

    @classmethod
    def for_policy(cls, policy: object) -> "Options":
        regions = getattr(policy, "pii_phone_regions", None) or ()
        return cls(phone_regions=tuple(regions), names=bool(getattr(policy, "pii_mask_names", False)))


def _blank(text: str, hits: list[Hit]) -> str:
    """The text with what is already found replaced by NULs, so that phone candidates neither repeat the digits
    of a card or an IBAN (the costly path) nor run across them."""
    if not hits:
        return text
    out: list[str] = []
    last = 0
    for hit in sorted(hits):
        if hit.start >= last:
            out += [text[last : hit.start], "\0" * (hit.end - hit.start)]
            last = hit.end
    out.append(text[last:])
    return "".join(out)


def detect(text: str, options: Options) -> list[Hit]:
    """Non-overlapping hits in folded offsets, in text order (the earlier kind in KINDS wins an overlap)."""
    hits: list[Hit] = list(detectors.emails(text))
    if _DIGIT.search(text):
        hits += detectors.ibans(text)
        hits += detectors.cards(text)
        hits += detectors.ips(text)
        hits += detectors.phones(_blank(text, hits), options.regions)
    if options.names:
        hits += names(text)
    if len(hits) < 2:
        return hits
    kept: list[Hit] = []
    for hit in sorted(hits, key=lambda h: (KINDS.index(h.kind), h.start)):
        if all(hit.end <= other.start or hit.start >= other.end for other in kept):
            kept.append(hit)
    return sorted(kept)


@dataclass
class Masker:
    """One per conversation: remembers which value got which placeholder."""

    options: Options = field(default_factory=Options)
    placeholders: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, canonical value) -> placeholder
    originals: dict[str, str] = field(default_factory=dict)  # placeholder -> the value as first written
    counts: dict[str, int] = field(default_factory=dict)

    def _placeholder(self, kind: str, key: str, original: str) -> str:
        placeholder = self.placeholders.get((kind, key))
        if placeholder is None:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            placeholder = self.placeholders[(kind, key)] = f"[{kind}_{self.counts[kind]}]"
            self.originals[placeholder] = original
        return placeholder

    def mask(self, text: str) -> str:
        folded = fold(text)
        hits = detect(folded.text, self.options)
        if not hits:
            return text
        out: list[str] = []
        last = 0
        for hit in hits:
            start, end = folded.original_span(hit.start, hit.end)
            out.append(text[last:start])
            out.append(self._placeholder(hit.kind, hit.key, text[start:end]))
            last = end
        out.append(text[last:])
        return "".join(out)

    @property
    def found(self) -> int:
        return len(self.placeholders)

    def unmask(self, text: str) -> str:
        if not self.originals or "[" not in text:
            return text
        return PLACEHOLDER.sub(lambda m: self.originals.get(m.group(), m.group()), text)


class StreamUnmasker:
    """Unmasks a stream of deltas: a placeholder split across deltas ("[EMA" + "IL_1]") is held back until
    it is complete, so the user never sees half a placeholder or a masked value."""

    def __init__(self, masker: Masker) -> None:
        self.masker = masker
        self.pending = ""

    def feed(self, delta: str) -> str:
        text = self.pending + delta
        cut = text.rfind("[")
        if cut != -1 and "]" not in text[cut:] and len(text) - cut <= 14:
            self.pending, text = text[cut:], text[:cut]
        else:
            self.pending = ""
        return self.masker.unmask(text)

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        return self.masker.unmask(text)
