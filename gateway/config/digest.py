"""The running configuration's short name: the sha256 of its canonical form, as `/readyz`, the admin API, the
`tollgate_config_info` metric and every usage record show it.

Canonical: the validated `GatewayConfig` (so comments, key order and `${VAR}` spelling do not count, and the values
they expand to do), every field by name in a sorted JSON document. Secrets enter as their own sha256, so a rotated
key changes the hash and the document never holds one.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import re
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.config.model import GatewayConfig, Secret

HASH_LENGTH = 12  # hex digits: short enough for a log line and a label, long enough never to collide by chance


def config_hash(config: GatewayConfig) -> str:
    """The first `HASH_LENGTH` hex digits of the sha256 of `config`'s canonical form."""
    document = orjson.dumps(_canonical(config), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(document).hexdigest()[:HASH_LENGTH]


def _canonical(value: Any) -> Any:  # noqa: PLR0911  # one return per kind of value is the clearest form
    if isinstance(value, Secret):
        return "sha256:" + hashlib.sha256(value.reveal().encode()).hexdigest()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        items = [_canonical(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, frozenset | set) else items
    if isinstance(value, enum.Enum):
        return _canonical(value.value)
    if isinstance(value, re.Pattern):
        return value.pattern
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)
