# ruff: noqa: RUF001  (look-alike characters are the subject of this module)
"""Person names, in a bounded form: the name that a cue announces.

There is no trustworthy named-entity model that installs from PyPI (spaCy's official models are not published
there; the copies that are come from unknown uploaders, and a model package runs its code when loaded), and a
statistical model would cost milliseconds on every request. So names are found where the text itself says a
name follows: a title or salutation (Mr, Mrs, Ms, Dr, Prof, Herr, Frau, M., Mme, Sr., Sra., ...), a
self-introduction ("my name is", "call me", "je m'appelle", "ich heiße", "me llamo", "mi chiamo", ...),
a letter's greeting ("Dear ...") or sign-off ("Regards,\\n..."), and a "Name:" field. The name is the one to
three capitalised words after the cue. A name mentioned without a cue ("ask Anna about it") is not found;
that is the documented limit.
"""

import re
from collections.abc import Iterator

from saas.llm.pii.detectors import Hit

_WORD = r"[^\W\d_]+(?:['’-][^\W\d_]+)*"
_TITLES = r"(?:(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Herr|Frau|Mme|Mlle|Sr|Sra|Srta|Sig\.ra|Sig|Dott\.ssa|Dott)\.?|M\.)"
_INTRODUCTIONS = (
    r"my name is|my name's|my full name is|i'm called|i am called|call me|contact person:?|je m'appelle|"
    r"je m’appelle|mon nom est|ich heiße|ich heisse|mein name ist|me llamo|mi nombre es|mi chiamo|"
    r"il mio nome è|mijn naam is|ik heet|dear|liebe|lieber|sehr geehrte|sehr geehrter|estimado|estimada"
)
_SIGN_OFFS = (
    r"(?:kind |best |warm )?regards|best|thanks|thank you|cheers|sincerely|yours|mit freundlichen grüßen|"
    r"viele grüße|cordialement|bien à vous|saludos|un saluto|cordiali saluti|met vriendelijke groet"
)
NAME = re.compile(
    rf"(?:(?<![\w.])(?P<title>{_TITLES})[ \t]+"
    rf"|(?<!\w)(?i:{_INTRODUCTIONS})[ \t]+(?!{_TITLES}[ \t])"
    rf"|(?m:^)[ \t]*(?i:(?:full )?name):[ \t]*"
    rf"|(?<!\w)(?i:{_SIGN_OFFS}),[ \t]*\r?\n[ \t]*)"
    rf"(?P<name>{_WORD}(?:[ \t]+{_WORD}){{0,2}})"
)
# Capitalised words after a cue that are not names ("Dear Sir", "Hi Team", "Dr. Who?" is a name, fine).
_NOT_NAMES = frozenset(
    """sir sirs madam madame all team everyone everybody there customer customers colleague colleagues friend
    friends folks guys client clients user users support sales hiring manager valued member members the a an and
    or mr mrs ms dr prof herr frau monsieur messieurs damen herren kollegen señor señora i you we it this
    that""".split()  # noqa: SIM905
)
_LOWER_PARTICLES = frozenset("van von der den de du da di del la le y bin al".split())  # noqa: SIM905


def _trie(words: list[str]) -> str:
    """One pattern for many literals, as a trie ("m(?:r|s|me)"): the engine rejects most positions at one
    character instead of trying every alternative."""
    tree: dict[str, dict] = {}
    for word in words:
        node = tree
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def emit(node: dict[str, dict]) -> str:
        branches = [re.escape(char) + emit(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 and "" not in node else "(?:" + "|".join(branches) + ")"
        return body + ("?" if "" in node else "")

    return emit(tree)


# Where a cue may start, in the lower-cased text: a cheap scan, after which NAME is tried only there.
_CUE_WORDS = (
    "mr|mrs|ms|mx|miss|dr|prof|herr|frau|mme|mlle|sr|sra|srta|sig|dott|m.|my name|my full name|i'm called|"
    "i am called|call me|contact person|je m|mon nom|ich hei|mein name|me llamo|mi nombre|mi chiamo|il mio nome|"
    "mijn naam|ik heet|dear|liebe|sehr geehrte|estimad|regards|kind regards|best regards|warm regards|best|thanks|"
    "thank you|cheers|sincerely|yours|mit freundlichen|viele gr|cordialement|bien à vous|saludos|un saluto|"
    "cordiali|met vriendelijke|name|full name"
)
CUES = re.compile(r"\b" + _trie(_CUE_WORDS.split("|")))


def _cue_starts(text: str) -> list[int]:
    lowered = text.lower()
    if len(lowered) != len(text):  # a few letters lower-case to two characters ("İ"): scan the text itself
        return [match.start() for match in NAME.finditer(text)]
    starts: list[int] = []
    for cue in CUES.finditer(lowered):
        if cue.group().endswith("name"):  # "Name:" fields start their line, maybe after spaces
            line = text.rfind("\n", 0, cue.start()) + 1
            if not text[line : cue.start()].strip(" \t"):
                starts.append(line)
        starts.append(cue.start())
    return starts


def names(text: str) -> Iterator[Hit]:
    last = 0
    for position in _cue_starts(text):
        if position < last:
            continue
        match = NAME.match(text, position)
        if match is None:
            continue
        last = match.end()
        start = match.start("name")
        words = match.group("name").split()
        kept: list[str] = []
        for word in words:
            if word.casefold() in _NOT_NAMES and not kept:
                break
            if (word[0].isupper() and word.casefold() not in _NOT_NAMES) or (kept and word in _LOWER_PARTICLES):
                kept.append(word)
            else:
                break
        while kept and kept[-1] in _LOWER_PARTICLES:
            kept.pop()
        if not kept:
            continue
        end = start
        for word in kept:  # the words may be separated by tabs or several spaces
            end = text.index(word, end) + len(word)
        yield Hit(start, end, "NAME", " ".join(kept).casefold())
