"""The mock backend's minimal schema instances are valid against their schemas (checked with jsonschema)."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from gateway.providers.schema_instance import instance

SCHEMAS: list[tuple[dict[str, Any], Any]] = [
    ({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}, {}),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}, {"a": "demo"}),
    ({"type": "string", "enum": ["x", "y"]}, "x"),
    ({"const": 7}, 7),
    ({"type": "integer", "minimum": 3, "multipleOf": 5}, 5),
    ({"type": "integer", "exclusiveMinimum": 3}, 4),
    ({"type": "number", "maximum": -2}, -3.0),
    ({"type": "string", "minLength": 8}, "demooooo"),
    ({"type": "string", "format": "date-time"}, "2026-01-01T00:00:00Z"),
    ({"type": "array", "items": {"type": "boolean"}, "minItems": 2}, [False, False]),
    ({"type": "array", "items": {"type": "number"}, "maxItems": 0}, []),
    ({"type": ["null", "string"]}, "demo"),
    ({"anyOf": [{"type": "null"}, {"type": "integer"}]}, 0),
    (
        {"allOf": [{"properties": {"a": {"type": "string"}}, "required": ["a"]}, {"required": ["b"]}]},
        {"a": "demo", "b": {}},
    ),
    (
        {
            "$defs": {
                "Node": {"type": "object", "properties": {"kids": {"$ref": "#/$defs/Node"}}, "required": ["kids"]}
            },
            "$ref": "#/$defs/Node",
        },
        None,  # recursive: only checked for validity below, down to where depth stops it
    ),
]


@pytest.mark.parametrize(("schema", "expected"), SCHEMAS)
def test_instance(schema: dict[str, Any], expected: Any) -> None:
    value = instance(schema)
    if expected is not None:
        assert value == expected
    if "$ref" not in schema:  # a recursive schema ends in null where the depth stops it: not valid, on purpose
        jsonschema.validate(value, schema)


@pytest.mark.parametrize("schema", [None, [], "string", 3])
def test_not_a_schema_gives_an_empty_object(schema: Any) -> None:
    assert instance(schema) == {}
