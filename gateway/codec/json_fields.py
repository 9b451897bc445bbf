"""Reading JSON values a client sent: each checker returns the value with its type, or raises an
`InvalidRequestError` whose `param` is the path of the field, so every bad input gets a 400 that names it."""

from __future__ import annotations

import math
from typing import Any

import orjson

from gateway.errors import InvalidRequestError

_INT64_MAX = 2**63 - 1


def bad(param: str, message: str) -> InvalidRequestError:
    """An invalid-parameter error naming the field."""
    return InvalidRequestError(f"{param}: {message}", code="invalid_parameter", param=param)


def type_name(value: object) -> str:
    """How JSON names the type of `value`."""
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def as_str(value: object, param: str) -> str:
    """A JSON string."""
    if not isinstance(value, str):
        raise bad(param, f"expected a string, got {type_name(value)}")
    return value


def as_bool(value: object, param: str) -> bool:
    """A JSON boolean."""
    if not isinstance(value, bool):
        raise bad(param, f"expected a boolean, got {type_name(value)}")
    return value


def as_int(value: object, param: str, low: int = 0, high: int = _INT64_MAX) -> int:
    """A JSON integer within [low, high] (a float with no fraction is accepted, as OpenAI does)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(param, f"expected an integer, got {type_name(value)}")
    if not low <= value <= high:
        raise bad(param, f"must be between {low} and {high}, got {value}")
    return value


def as_float(value: object, param: str, low: float, high: float) -> float:
    """A finite JSON number within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad(param, f"expected a number, got {type_name(value)}")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise bad(param, f"must be between {low:g} and {high:g}, got {value}")
    return number


def as_dict(value: object, param: str) -> dict[str, Any]:
    """A JSON object."""
    if not isinstance(value, dict):
        raise bad(param, f"expected an object, got {type_name(value)}")
    return value


def as_list(value: object, param: str, *, allow_empty: bool = True) -> list[Any]:
    """A JSON array."""
    if not isinstance(value, list):
        raise bad(param, f"expected an array, got {type_name(value)}")
    if not value and not allow_empty:
        raise bad(param, "must not be empty")
    return value


def json_text(value: object, param: str) -> str:
    """Arbitrary JSON as compact text, for the `*_json` fields."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        # The parser reads 1,024 levels of nesting; the encoder writes 254. Deeper is no real request.
        raise bad(param, "nested too deeply") from None
