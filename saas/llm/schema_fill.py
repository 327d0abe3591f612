"""A value for a JSON Schema, filled field by field from a source of text.

Used where no generative model writes the JSON: the local engine (`response_format` json_schema, and the
arguments of a tool call it must make) fills strings with the passages that best match each field, numbers
with the first number in them, enums with the closest option; the fake upstream fills them with plain
placeholders. The value follows the schema's structure, types, enums, consts, nullable unions, `$ref`s into
`$defs`, array sizes and numeric and length bounds, so it validates against the schema (a `pattern` or a
`format` is not guaranteed).
"""

from __future__ import annotations

import re
from typing import Any, Protocol

MAX_DEPTH = 12  # a recursive schema ($ref to itself) stops here with the shortest value it allows


class Source(Protocol):
    """Where the values come from. `hint` names the field in words (its name, title and description)."""

    def text(self, hint: str, index: int) -> str: ...

    def number(self, hint: str) -> float | None: ...

    def flag(self, hint: str) -> bool: ...

    def choose(self, hint: str, options: list[Any]) -> Any: ...


def words(name: str) -> str:
    """`delivery_date` and `deliveryDate` -> `delivery date`."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|[_\-]+", " ", name).strip().lower()


def fill(schema: dict[str, Any], source: Source, hint: str = "") -> Any:
    return _Filler(schema, source).value(schema, hint, 0, 0)


class _Filler:
    def __init__(self, root: dict[str, Any], source: Source) -> None:
        self.root = root
        self.source = source

    def resolve(self, schema: Any) -> dict[str, Any]:
        seen = 0
        while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and seen < MAX_DEPTH:
            target: Any = self.root
            for part in schema["$ref"].removeprefix("#").strip("/").split("/"):
                if not part:
                    continue
                target = target.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(target, dict) else {}
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
            seen += 1
        return schema if isinstance(schema, dict) else {}

    def value(self, schema: Any, hint: str, index: int, depth: int) -> Any:
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self.source.choose(hint, schema["enum"])
        for union in ("anyOf", "oneOf"):
            options = [self.resolve(o) for o in schema.get(union) or []]
            if options:
                chosen = next((o for o in options if o.get("type") != "null"), options[0])
                rest = {k: v for k, v in schema.items() if k != union}
                return self.value({**rest, **chosen}, hint, index, depth)
        if schema.get("allOf"):
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                part = self.resolve(part)
                merged = {
                    **merged,
                    **part,
                    "properties": {**merged.get("properties", {}), **part.get("properties", {})},
                }
            return self.value(merged, hint, index, depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else ("array" if "items" in schema else "string")
        hint = " ".join(filter(None, [hint, schema.get("title", ""), schema.get("description", "")])).strip()
        if kind == "object":
            properties = schema.get("properties") or {}
            if depth >= MAX_DEPTH:
                properties = {k: v for k, v in properties.items() if k in (schema.get("required") or [])}
            return {name: self.value(prop, words(name), 0, depth + 1) for name, prop in properties.items()}
        if kind == "array":
            low, high = int(schema.get("minItems", 0)), schema.get("maxItems")
            count = low if depth >= MAX_DEPTH else max(low, 1)
            if high is not None:
                count = min(count, int(high))
            items = schema.get("items") or {}
            if isinstance(items, list):  # an old-style tuple
                return [self.value(item, hint, i, depth + 1) for i, item in enumerate(items)]
            return [self.value(items, hint, i, depth + 1) for i in range(count)]
        if kind in ("integer", "number"):
            return self._number(schema, hint, integer=kind == "integer")
        if kind == "boolean":
            return self.source.flag(hint)
        if kind == "null":
            return None
        return self._string(schema, hint, index)

    def _string(self, schema: dict[str, Any], hint: str, index: int) -> str:
        text = self.source.text(hint, index)
        if "maxLength" in schema:
            text = text[: int(schema["maxLength"])]
        if len(text) < int(schema.get("minLength", 0)):
            text = text.ljust(int(schema["minLength"]), ".")
        return text

    def _number(self, schema: dict[str, Any], hint: str, *, integer: bool) -> float | int:
        found = self.source.number(hint)
        value = float(found) if found is not None else 0.0
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        step = 1.0 if integer else 0.001
        if isinstance(low, (int, float)) and not isinstance(low, bool):
            value = max(value, low + (step if "exclusiveMinimum" in schema and "minimum" not in schema else 0))
        if isinstance(high, (int, float)) and not isinstance(high, bool):
            value = min(value, high - (step if "exclusiveMaximum" in schema and "maximum" not in schema else 0))
        if integer:
            return round(value)
        return value


class Placeholders:
    """Plain values: `<field words>` for strings, 1 for numbers, true, the first option (the fake upstream)."""

    def text(self, hint: str, index: int) -> str:
        return hint or "value" if index == 0 else f"{hint or 'value'} {index + 1}"

    def number(self, hint: str) -> float | None:
        return 1

    def flag(self, hint: str) -> bool:
        return True

    def choose(self, hint: str, options: list[Any]) -> Any:
        return options[0]
