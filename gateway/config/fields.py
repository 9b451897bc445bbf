"""The pieces every config section is read with: `_Node` (a mapping that remembers its path and refuses fields nobody
read) and the converters that check one value and name its path when it is wrong."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "KB": 1000, "KiB": 1024, "MB": 10**6, "MiB": 2**20, "GB": 10**9, "GiB": 2**30}
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the bad field."""


class _Node:
    """A mapping being read, which remembers its path and refuses fields nobody read."""

    def __init__(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise ConfigError(f"{path or 'config'}: expected a mapping, got {_kind(value)}")
        self.value: dict[str, Any] = value
        self.path = path
        self._read: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, convert: Callable[[Any, str], T], default: T) -> T:
        self._read.add(key)
        if key not in self.value or self.value[key] is None:
            return default
        return convert(self.value[key], self.at(key))

    def require(self, key: str, convert: Callable[[Any, str], T]) -> T:
        self._read.add(key)
        if key not in self.value or self.value[key] is None:
            raise ConfigError(f"{self.at(key)}: required")
        return convert(self.value[key], self.at(key))

    def raw(self, key: str) -> Any:
        self._read.add(key)
        return self.value.get(key)

    def done(self) -> None:
        unknown = sorted(str(k) for k in self.value if k not in self._read)
        if unknown:
            raise ConfigError(f"{self.at(unknown[0])}: unknown field")


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(f"{path}: expected a string, got {_kind(value)}")
    return str(value)


def _name(value: Any, path: str) -> str:
    text = _str(value, path)
    if not _NAME.match(text):
        raise ConfigError(f"{path}: {text!r} is not a valid name (letters, digits and . _ : / @ -)")
    return text


def _bool(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    # An expanded `${VAR:+true}` is "" when VAR is unset: that reads as off.
    if isinstance(value, str) and value.strip().lower() in ("", "true", "false", "yes", "no", "on", "off"):
        return value.strip().lower() in ("true", "yes", "on")
    raise ConfigError(f"{path}: expected true or false, got {value!r}")


def _positive_number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ConfigError(f"{path}: expected a positive number, got {value!r}")
    return float(value)


def _positive_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{path}: expected a positive whole number, got {value!r}")
    return value


def parse_duration(value: Any, path: str) -> float:
    """`250ms`, `30s`, `5m`, `1h`, or a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ConfigError(f"{path}: expected a duration such as 250ms, 30s or 5m, got {value!r}")
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if not 0 < seconds < math.inf:
        raise ConfigError(f"{path}: must be more than zero and finite")
    return seconds


def duration_or_zero(value: Any, path: str) -> float:
    """A duration as `parse_duration` reads it, or zero (`0`, `0s`): for waits that may be skipped."""
    if value == 0 or (isinstance(value, str) and value.strip() in ("0", "0s", "0ms")):
        return 0.0
    return parse_duration(value, path)


def _size(value: Any, path: str) -> int:
    """`8MiB`, `512KB`, or a number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        m = _SIZE.match(str(value))
        if not m:
            raise ConfigError(f"{path}: expected a size such as 8MiB or 512KB, got {value!r}")
        size = int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    if size <= 0:
        raise ConfigError(f"{path}: must be more than zero")
    return size


def _address(value: Any, path: str) -> str:
    text = _str(value, path)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{path}: expected host:port, got {text!r}")
    return text


def _url(value: Any, path: str) -> str:
    text = _str(value, path)
    if not text.startswith(("http://", "https://")):
        raise ConfigError(f"{path}: expected an http:// or https:// URL, got {text!r}")
    try:  # what a call would find wrong with it only when it is made
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{path}: not a usable URL ({exc}): {text!r}") from None
    if not parts.hostname or port == 0:
        raise ConfigError(f"{path}: expected a host (and a port from 1 to 65535), got {text!r}")
    return text.rstrip("/")


def _str_map(value: Any, path: str) -> Mapping[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a mapping, got {_kind(value)}")
    return MappingProxyType({str(k): _str(v, f"{path}.{k}") for k, v in value.items()})


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)


def header_name_problem(name: str) -> str | None:
    """Why `name` cannot be sent as an HTTP header's name, or None when it can: it must be a token."""
    return None if _HEADER_NAME.fullmatch(name) else f"{name[:40]!r} is not a header name"


def header_value_problem(value: str) -> str | None:
    """Why `value` cannot be sent as an HTTP header's value, or None when it can: a line break or NUL would split
    the request, and the wire carries Latin-1."""
    if any(c in value for c in "\r\n\0"):
        return "a line break or NUL cannot be sent in a header"
    if not value.isascii():
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            return "a character outside Latin-1 cannot be sent in a header"
    return None


def _header_map(value: Any, path: str) -> Mapping[str, str]:
    """HTTP headers to send, each name and value one the upstream client can send (checked by the same rules)."""
    headers = _str_map(value, path)
    for name, text in headers.items():
        if problem := header_name_problem(name):
            raise ConfigError(f"{path}: {problem}")
        if problem := header_value_problem(text):
            raise ConfigError(f"{path}.{name}: {problem}")
    return headers


def _globs(value: Any, path: str) -> tuple[str, ...]:
    """One glob or a list of them."""
    items = value if isinstance(value, list) else [value]
    return tuple(_str(v, f"{path}[{i}]" if isinstance(value, list) else path) for i, v in enumerate(items))


def _networks(value: Any, path: str) -> tuple[str, ...]:
    """IP networks in CIDR notation, or single addresses, normalized (`10.1.2.3/8` is `10.0.0.0/8`)."""
    out = []
    for i, item in enumerate(_list(value, path)):
        text = _str(item, f"{path}[{i}]")
        try:
            out.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise ConfigError(f"{path}[{i}]: expected an IP address or network (CIDR), got {text!r}") from None
    return tuple(out)


def _str_list(value: Any, path: str) -> list[str]:
    return [_str(v, f"{path}[{i}]") for i, v in enumerate(_list(value, path))]


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"{path}: expected a list, got {_kind(value)}")
    return value
