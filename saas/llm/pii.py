"""Personal data out, placeholders in, and back again.

Emails, phone numbers, card numbers (Luhn-valid), IBANs (checksum-valid) and IP addresses are replaced by
stable placeholders such as [EMAIL_1] before a request leaves; the same value gets the same placeholder for
the whole conversation, and `unmask` restores the values in the reply the user sees. Validation comes from
python-stdnum (Luhn, IBAN) and phonenumbers, so order numbers and dates are left alone.
"""

import ipaddress
import re
from dataclasses import dataclass, field

import phonenumbers
from stdnum import iban, luhn

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b")
IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
IPV6 = re.compile(r"\b(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{1,4}\b")
PLACEHOLDER = re.compile(r"\[(EMAIL|PHONE|CARD|IBAN|IP)_(\d+)\]")


@dataclass
class Masker:
    """One per conversation: remembers which value got which placeholder."""

    placeholders: dict[str, str] = field(default_factory=dict)  # value -> placeholder
    counts: dict[str, int] = field(default_factory=dict)

    def _placeholder(self, kind: str, value: str) -> str:
        if value not in self.placeholders:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.placeholders[value] = f"[{kind}_{self.counts[kind]}]"
        return self.placeholders[value]

    def mask(self, text: str) -> str:
        text = EMAIL.sub(lambda m: self._placeholder("EMAIL", m.group()), text)
        text = IBAN.sub(lambda m: self._placeholder("IBAN", m.group()) if iban.is_valid(m.group()) else m.group(), text)
        text = CARD.sub(self._card, text)
        text = IPV4.sub(lambda m: self._ip(m.group()), text)
        text = IPV6.sub(lambda m: self._ip(m.group()), text)
        return self._phones(text)

    def _card(self, match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group())
        return (
            self._placeholder("CARD", match.group())
            if 13 <= len(digits) <= 19 and luhn.is_valid(digits)
            else match.group()
        )

    def _ip(self, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return value
        return self._placeholder("IP", value)

    def _phones(self, text: str) -> str:
        # Numbers in international form (+CC ...) anywhere; no default region, so plain digit runs stay.
        out, last = [], 0
        for match in phonenumbers.PhoneNumberMatcher(text, None):
            out.append(text[last : match.start])
            out.append(self._placeholder("PHONE", match.raw_string))
            last = match.end
        out.append(text[last:])
        return "".join(out)

    @property
    def found(self) -> int:
        return len(self.placeholders)

    def unmask(self, text: str) -> str:
        values = {placeholder: value for value, placeholder in self.placeholders.items()}
        return PLACEHOLDER.sub(lambda m: values.get(m.group(), m.group()), text)


class StreamUnmasker:
    """Unmasks a stream of deltas: a placeholder split across deltas ("[EMA" + "IL_1]") is held back until
    it is complete, so the user never sees half a placeholder or a masked value."""

    def __init__(self, masker: Masker) -> None:
        self.masker = masker
        self.pending = ""

    def feed(self, delta: str) -> str:
        text = self.pending + delta
        cut = text.rfind("[")
        if cut != -1 and "]" not in text[cut:] and len(text) - cut <= 12:
            self.pending, text = text[cut:], text[:cut]
        else:
            self.pending = ""
        return self.masker.unmask(text)

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        return self.masker.unmask(text)
