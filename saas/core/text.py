"""Text PostgreSQL cannot store: a NUL character (text and jsonb refuse it) or a lone UTF-16 surrogate (which
has no UTF-8 form). JSON may carry both (`"\\u0000"`, `"\\ud800"`), and a query string or a multipart file name
may carry NUL; left alone they end in a database error (a 500) wherever they are saved.

`unstorable(value)` finds them anywhere in parsed input (strings, dict keys, lists); `storable(text)` makes a
string safe to record (for a ledger row that must be written about a refused request).
"""

import re
from collections.abc import Iterator, Mapping
from typing import Any

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
MAX_DEPTH = 64


def _strings(value: Any, path: str, depth: int) -> Iterator[tuple[str, str]]:
    if depth > MAX_DEPTH:
        return
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            name = f"{path}.{key}" if path else str(key)
            if isinstance(key, str):
                yield name, key
            yield from _strings(item, name, depth + 1)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]", depth + 1)


def unstorable(value: Any, path: str = "") -> str | None:
    """Where in `value` a string holds a NUL or a lone surrogate (a dotted path, "" for the value itself), or
    None when every string is storable."""
    for where, text in _strings(value, path, 0):
        if _UNSTORABLE.search(text):
            return storable(where) or "body"
    return None


def storable(text: str) -> str:
    """`text` with each NUL and lone surrogate replaced by U+FFFD."""
    return _UNSTORABLE.sub("\ufffd", text)
