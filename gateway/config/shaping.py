"""Per-backend request shaping, as configured: `defaults`, `overrides` and `remove` on a backend.

Each names chat completion request fields as a client sends them in OpenAI JSON (`temperature`, `max_tokens`,
`response_format`, or a provider's own field such as `top_k` or `safetySettings`). Config knows no wire format: it
checks the shape of the settings here, and `gateway.providers.shaping`, which applies them, checks each value with the
same codec that checks a client's request when the providers are built (at start and by `check-config`), so a bad
value is refused with its field's path, not found out on the first request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# What a client or the gateway itself decides, never a backend's configuration.
RESERVED = frozenset(("model", "messages", "stream", "stream_options"))


class ShapingError(ValueError):
    """A shaping setting that cannot be used; the message names the field by its path."""


@dataclass(frozen=True, slots=True)
class RequestShaping:
    """What a backend changes in every chat request before its adapter translates it."""

    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # set when the client did not
    overrides: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # set whatever the client said
    remove: tuple[str, ...] = ()  # dropped
    path: str = field(default="", compare=False)  # where in the config it was set (`backends[0]`), for errors

    def __bool__(self) -> bool:
        return bool(self.defaults or self.overrides or self.remove)


def parse_shaping(defaults: Any, overrides: Any, remove: Any, path: str) -> RequestShaping:
    """Check the three settings of the backend at `path` (`backends[0]`); a bad one raises `ShapingError`."""
    return RequestShaping(
        defaults=_params(defaults, f"{path}.defaults"),
        overrides=_params(overrides, f"{path}.overrides"),
        remove=_names(remove, f"{path}.remove"),
        path=path,
    )


def _params(value: Any, path: str) -> Mapping[str, Any]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, dict):
        raise ShapingError(f"{path}: expected a mapping of request field to value")
    for key in value:
        if key in RESERVED:
            raise ShapingError(f"{path}.{key}: set by the client or the gateway, not by a backend")
    return MappingProxyType(dict(value))


def _names(value: Any, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ShapingError(f"{path}: expected a list of request field names")
    for i, name in enumerate(value):
        if name in RESERVED:
            raise ShapingError(f"{path}[{i}]: {name!r} is set by the client or the gateway, not by a backend")
    return tuple(value)
