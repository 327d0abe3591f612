"""The detectors: each finds one kind of personal data in folded text (fold.py) and returns hits.

A hit is (start, end, kind, key) in folded offsets; `key` is the value in a canonical form (digits of a card,
E.164 of a phone, compact upper-case IBAN, compressed IP, lower-case email) so that one value written two ways
gets one placeholder. Every pattern is compiled once; the costly checks (phonenumbers' matcher, IBAN and Luhn
checksums, ipaddress) run only on the few candidates that the cheap patterns let through.
"""

import ipaddress
import re
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import phonenumbers
from phonenumbers import Leniency, PhoneNumberFormat, PhoneNumberMatcher
from stdnum import iban, luhn


class Hit(NamedTuple):
    start: int
    end: int
    kind: str
    key: str


# --- Emails: dot-atom or quoted local part, Unicode (IDN) or punycode domains ------------------------------
_ATOM = r"[\w!#$%&'*+/=?^`{|}~-]+"
# Found from each "@" outwards (a pattern scanned over the whole text would retry every word as a local part).
EMAIL_LOCAL = re.compile(rf"""(?:"(?:[^"\\\r\n]|\\.){{1,64}}"|(?<![\w.!#$%&'*+/=?^`{{|}}~-]){_ATOM}(?:\.{_ATOM})*)$""")
EMAIL_DOMAIN = re.compile(
    r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+(?:xn--[a-z0-9-]{2,59}|[^\W\d_]{2,63})(?![\w-])", re.IGNORECASE
)
_RETINA = re.compile(r"\d+(?:\.\d+)?x\.", re.IGNORECASE)  # icon@2x.png is a file name, not an address


def emails(text: str) -> Iterator[Hit]:
    at = text.find("@")
    while at != -1:
        domain = EMAIL_DOMAIN.match(text, at + 1)
        if domain is not None and not _RETINA.match(domain.group()):
            local = EMAIL_LOCAL.search(text, max(0, at - 130), at)
            if local is not None:
                yield Hit(local.start(), domain.end(), "EMAIL", text[local.start() : domain.end()].casefold())
        at = text.find("@", at + 1)


# --- IBANs: any case, compact or in groups separated by spaces or dashes ------------------------------------
# Matched from the check digits (digits are rare in prose, letters are everywhere); the country code is checked
# behind them, and the hit starts two characters before the match.
IBAN = re.compile(r"\d(?<=(?<![\w-])[A-Za-z]{2}\d)\d(?:[ -]?[A-Za-z0-9]{1,4}){3,9}(?!\w)")
_SEPARATORS = re.compile(r"[ -]")


def ibans(text: str) -> Iterator[Hit]:
    for match in IBAN.finditer(text):
        start = match.start() - 2
        candidate = text[start : match.end()]
        # The pattern may have run into the next word ("... 3000 is mine"): try shorter prefixes, group by group.
        cuts = [m.start() for m in _SEPARATORS.finditer(candidate)] + [len(candidate)]
        for cut in reversed(cuts):
            compact = _SEPARATORS.sub("", candidate[:cut]).upper()
            if len(compact) < 15:
                break
            if len(compact) <= 34 and iban.is_valid(compact):
                yield Hit(start, start + cut, "IBAN", compact)
                break


# --- Card numbers: 13 to 19 digits, any single separator between digits, Luhn-valid, a card's first digit ---
CARD = re.compile(r"[2-6](?<![\w.,/-].)(?:[ .\-/_]?\d){12,18}(?![\w]|[.,/-]\d)")
_NOT_DIGIT = re.compile(r"\D")


def cards(text: str) -> Iterator[Hit]:
    for match in CARD.finditer(text):
        digits = _NOT_DIGIT.sub("", match.group())
        groups = _NOT_DIGIT.split(match.group())
        # Cards are written in groups of 4 to 6 (4-6-5, 4-4-4-4-3); "3.14159265358979" is a number.
        if all(len(group) >= 3 for group in groups) and luhn.is_valid(digits):
            yield Hit(match.start(), match.end(), "CARD", digits)


# --- IP addresses: IPv4, IPv6 in every form (compressed, with an embedded IPv4, with a zone) ---------------
IPV4 = re.compile(r"\d(?<![\w.].)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?![\w]|\.\d)")
IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:.]*:[0-9A-Fa-f.]*(?:%[\w.-]+)?")
_VERSION_BEFORE = re.compile(r"(?:\bv|version|release|build)\s*$", re.IGNORECASE)


def _address(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def ips(text: str) -> Iterator[Hit]:
    if "." in text:
        for match in IPV4.finditer(text):
            if _VERSION_BEFORE.search(text, max(0, match.start() - 12), match.start()):
                continue  # "version 1.2.3.4" is a build, not a host
            if (key := _address(match.group())) is not None:
                yield Hit(match.start(), match.end(), "IP", key)
    if "::" in text or text.count(":") >= 5:
        for match in IPV6.finditer(text):
            value = match.group()
            # A sentence may end right after it ("... is 2001:db8::1." or "2001:db8::1:"): try without that.
            for candidate in (value, value.rstrip(".:"), value.rstrip(".")):
                hexdigits = sum(c in "0123456789abcdefABCDEF" for c in candidate.split("%")[0])
                if hexdigits >= 4 and (key := _address(candidate)) is not None:  # not "1::2" (a slice)
                    yield Hit(match.start(), match.start() + len(candidate), "IP", key)
                    break


# --- Phone numbers: phonenumbers' matcher (leniency VALID), region by region, on candidate windows only ----
PHONE_CANDIDATE = re.compile(
    r"[+(\d](?<![\w+-].)(?<!\d[:.,].)(?:(?<=\()\+?)?(?:(?<=[+(])\d|(?<=\d))[\d \-./()]{5,40}\d(?!\w)"
)
_DATE = re.compile(
    r"(?<!\d)(?:(?P<y>(?:19|20)\d\d)([-/.])(?P<m>\d{1,2})\2(?P<d>\d{1,2})"
    r"|(?P<a>\d{1,2})([-/.])(?P<b>\d{1,2})\6(?:19|20)?\d\d)(?!\d)"
)
_PHONE_CUE = re.compile(
    r"(?:phone|tel|telephone|mobile|cell|call|ring|sms|text|whatsapp|signal|fax|contact|number|n[uo]m[ée]ro|"
    r"nummer|telefon|handy|t[ée]l[ée]fono|m[óo]vil|cellulare|portable)\b\W{0,12}(?:\w+\W{1,3}){0,3}$",
    re.IGNORECASE,
)


def _has_date(window: str) -> bool:
    for match in _DATE.finditer(window):
        if match["y"] is not None:
            if 1 <= int(match["m"]) <= 12 and 1 <= int(match["d"]) <= 31:
                return True
        elif 1 <= min(int(match["a"]), int(match["b"])) <= 12 and max(int(match["a"]), int(match["b"])) <= 31:
            return True
    return False


def _parse(window: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        number = phonenumbers.parse(window, region)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_valid_number(number) else None


def _phone_spans(window: str, regions: Sequence[str]) -> list[tuple[int, int, phonenumbers.PhoneNumber]]:
    """Valid numbers in a candidate window: the window as one number (parse, region by region: cheap, also
    when it fails), or, for a window long enough to hold several, phonenumbers' matcher."""
    international = window.lstrip("(").startswith("+")
    for region in [None] if international else regions:
        number = _parse(window, region)
        if number is not None:
            return [(0, len(window), number)]
    if sum(c.isdigit() for c in window) <= 15:
        return []
    for region in [None] if international else regions:
        found = [(m.start, m.end, m.number) for m in PhoneNumberMatcher(window, region, leniency=Leniency.VALID)]
        if found:
            return found
    return []


def phones(text: str, regions: Sequence[str]) -> Iterator[Hit]:
    for candidate in PHONE_CANDIDATE.finditer(text):
        window = candidate.group()
        if sum(c.isdigit() for c in window) < 7 or _has_date(window) or IPV4.fullmatch(window):
            continue  # too short, a date (or a timestamp that starts with one), an IP address
        if window.isdigit() and not window.startswith("0"):
            start = candidate.start()
            if not _PHONE_CUE.search(text, max(0, start - 40), start):
                continue  # a bare run of digits is an order or ticket number unless the text calls it a phone
        for start, end, number in _phone_spans(window, regions):
            key = phonenumbers.format_number(number, PhoneNumberFormat.E164)
            yield Hit(candidate.start() + start, candidate.start() + end, "PHONE", key)
