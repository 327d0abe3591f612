"""Validators shared by every app's input (serializers and forms)."""

import unicodedata
import uuid

from django.core.exceptions import ValidationError
from django.utils.deconstruct import deconstructible

# Cc: C0/C1 controls (NUL, TAB, CR, LF, ESC, ...). Cf: format characters (bidi overrides and isolates such as
# U+202E, zero-width spaces and joiners, the BOM). Zl/Zp: the Unicode line and paragraph separators. Cs: lone
# surrogates. None of them belongs in a name shown on one line, in an email subject or in a log line.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


@deconstructible
class SingleLineValidator:
    """Refuses control and format characters in a single-line name (an org, an API key, a collection, a crew,
    an agent, a document title): CR/LF would break an email header or a log line, bidi overrides disguise a
    name, NUL is refused by PostgreSQL."""

    message = "Use letters, digits, spaces and punctuation only: control characters (such as {char}) are not allowed."
    code = "control_characters"

    def __call__(self, value: str) -> None:
        for char in str(value):
            if unicodedata.category(char) in REFUSED_CATEGORIES:
                raise ValidationError(
                    self.message.format(char=f"U+{ord(char):04X}"), code=self.code, params={"value": value}
                )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SingleLineValidator)

    def __hash__(self) -> int:
        return hash(self.code)


validate_single_line = SingleLineValidator()


def is_uuid(value: object) -> bool:
    """Whether a path or query value is a UUID: checked before a lookup so a malformed id is a 404, not a 500."""
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True
