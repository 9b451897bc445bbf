"""A minimal instance of a JSON schema: what the mock backend answers for `response_format` and tool arguments.

Minimal means: the required properties of an object (an object that lists none is `{}`), `minItems` elements of
an array (at least one, so the shape shows), the first of an `enum` or a `oneOf`/`anyOf`, `const` and `default` as
given, numbers at their lower bound, strings of their `minLength` in a few common `format`s. Local `$ref`s
(`#/$defs/...`, `#/definitions/...`, as pydantic writes them) are followed; `pattern` and `not` are not honoured.
A schema that is not a JSON object gives `{}`.
"""

from __future__ import annotations

import math
from typing import Any

_MAX_DEPTH = 12  # a recursive schema (a tree of nodes) stops here, with null
_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00Z",
    "email": "demo@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "192.0.2.1",
}


def instance(schema: Any) -> Any:
    """A value valid against `schema` (a decoded JSON schema), as small as its constraints allow."""
    if not isinstance(schema, dict):
        return {}
    return _Builder(schema).value(schema, 0)


class _Builder:
    __slots__ = ("_root",)

    def __init__(self, root: dict[str, Any]) -> None:
        self._root = root

    def value(self, schema: Any, depth: int) -> Any:  # noqa: PLR0911 -- one return per JSON schema keyword
        if not isinstance(schema, dict) or depth > _MAX_DEPTH:
            return None
        if "$ref" in schema:
            return self.value(self._resolve(schema["$ref"]), depth + 1)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return schema["enum"][0]
        if "default" in schema:
            return schema["default"]
        for key in ("oneOf", "anyOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                return self.value(_first_not_null(schema[key]), depth + 1)
        if isinstance(schema.get("allOf"), list):
            return self.value(_merged(schema), depth + 1)
        return self._typed(schema, _type_of(schema), depth)

    def _typed(self, schema: dict[str, Any], kind: str, depth: int) -> Any:
        if kind == "object":
            properties = schema["properties"] if isinstance(schema.get("properties"), dict) else {}
            required = [p for p in schema.get("required", []) if isinstance(p, str)]
            return {name: self.value(properties.get(name, {}), depth + 1) for name in required}
        if kind == "array":
            count = max(_int(schema.get("minItems"), 0), 1)
            if "maxItems" in schema:
                count = min(count, _int(schema["maxItems"], count))
            prefix = schema["prefixItems"] if isinstance(schema.get("prefixItems"), list) else []
            items = [self.value(s, depth + 1) for s in prefix]
            return items + [self.value(schema.get("items", {}), depth + 1) for _ in range(count - len(items))]
        if kind in ("integer", "number"):
            return _number(schema, integer=kind == "integer")
        if kind == "string":
            text = _FORMATS.get(str(schema.get("format")), "demo")
            return text.ljust(_int(schema.get("minLength"), 0), "o")
        return {"boolean": False, "null": None}.get(kind, {})

    def _resolve(self, ref: Any) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#"):
            return {}
        node: Any = self._root
        for part in ref.lstrip("#").strip("/").split("/"):
            if not part:
                continue
            node = node.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(node, dict) else None
        return node if isinstance(node, dict) else {}


def _type_of(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):  # ["string", "null"]: the first that is not null
        kind = next((k for k in kind if k != "null"), "null")
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "required" in schema:
        return "object"
    return "array" if "items" in schema else "object"


def _first_not_null(options: list[Any]) -> Any:
    return next((o for o in options if not (isinstance(o, dict) and o.get("type") == "null")), options[0])


def _merged(schema: dict[str, Any]) -> dict[str, Any]:
    """`allOf` folded into one schema: properties and required lists united, other keywords the last one's."""
    out: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"]:
        if not isinstance(part, dict):
            continue
        properties = {**out.get("properties", {}), **part.get("properties", {})}
        required = [*out.get("required", []), *part.get("required", [])]
        out = {**out, **part, "properties": properties, "required": list(dict.fromkeys(required))}
    return out


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def _number(schema: dict[str, Any], *, integer: bool) -> int | float:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    if not isinstance(low, int | float) or isinstance(low, bool):
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        low = min(0, high - 1) if isinstance(high, int | float) and not isinstance(high, bool) else 0
    elif "minimum" not in schema:  # exclusive: strictly above
        low = math.floor(low) + 1 if integer else low + 0.5
    if integer:
        value = math.ceil(low)
        step = schema.get("multipleOf")
        if isinstance(step, int) and not isinstance(step, bool) and step > 0:
            value = math.ceil(value / step) * step
        return value
    return float(low)
