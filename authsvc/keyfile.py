"""The YAML key file: one frozen `KeyRecord` per key, validated with the path of each bad field, saved atomically.

    keys:
      - id: 3f2a9c0d1e2b4a5c
        hash: sha256$<salt hex>$<digest hex>
        user: alice
        team: ml
        models: ["gpt-4o*", "openai/**"]   # allowed globs; absent or empty = every model
        deny: ["gpt-4o"]                    # denied globs; a deny wins
        limits: {requests_per_minute: 60, tokens_per_minute: 100000, concurrent_requests: 4,
                 budget: {usd: 50, period: month}}
        labels: {env: prod}
        created: 2026-11-23T10:00:00Z
        expires: 2027-01-01T00:00:00Z      # optional
        revoked: 2026-12-01T00:00:00Z      # optional; a key with `revoked` is refused from then on

Writers (`tollgate keys ...`) hold an `flock` on `<file>.lock` across read-modify-write and replace the file
atomically, so the server never reads half a file and two writers never lose each other's key. Comments in the file
are not preserved by writers.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from authsvc.keys import HASH_PATTERN, ID_PATTERN

PERIODS = ("day", "week", "month", "total")
_RECORD_FIELDS = ("id", "hash", "user", "team", "models", "deny", "limits", "labels", "created", "expires", "revoked")
_COUNTS = ("requests_per_minute", "tokens_per_minute", "concurrent_requests")
_INT64_MAX = 2**63 - 1
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEADER = "# tollgate API keys, written by `tollgate keys`: comments are not preserved.\n"
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser where it is built


class KeyFileError(ValueError):
    """A key file that cannot be used; the message names the bad field, as in `keys[3].user: expected ...`."""


@dataclass(frozen=True, slots=True)
class Budget:
    """A spend limit in US dollars per period (`day`, `week`, `month` or `total`)."""

    usd: float
    period: str = "month"


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-key limits the gateway enforces; zero means no limit."""

    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    concurrent_requests: int = 0
    budget: Budget | None = None


def _no_labels() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One API key as stored: its id, the hash of its secret, and what the key may do."""

    id: str
    hash: str = field(repr=False)
    user: str
    team: str = ""
    models: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    limits: Limits = Limits()
    labels: Mapping[str, str] = field(default_factory=_no_labels)
    created: datetime | None = None
    expires: datetime | None = None
    revoked: datetime | None = None

    def status(self, now: datetime) -> str:
        """`revoked`, `expired` or `active` at `now`."""
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and now >= self.expires:
            return "expired"
        return "active"


@dataclass(frozen=True, slots=True)
class KeyFile:
    """The keys of one file, in file order."""

    keys: tuple[KeyRecord, ...] = ()

    def get(self, key_id: str) -> KeyRecord | None:
        """The key with this id, if any."""
        return next((k for k in self.keys if k.id == key_id), None)

    def with_key(self, record: KeyRecord) -> KeyFile:
        """This file plus `record`; a duplicate id is refused."""
        if self.get(record.id) is not None:
            raise KeyFileError(f"keys: duplicate id {record.id}")
        return KeyFile((*self.keys, record))

    def replace(self, record: KeyRecord) -> KeyFile:
        """This file with the key of `record.id` replaced by `record`."""
        return KeyFile(tuple(record if k.id == record.id else k for k in self.keys))


def utc_now() -> datetime:
    """The current time in UTC: the default clock."""
    return datetime.now(UTC)


def format_time(value: datetime) -> str:
    """`2027-01-01T00:00:00Z`."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: Any, path: str) -> datetime:
    """A time from YAML or text (`2027-01-01T00:00:00Z`, or a date for its midnight); no zone means UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise KeyFileError(f"{path}: expected a time such as 2027-01-01T00:00:00Z, got {value!r}") from None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(), UTC)
    raise KeyFileError(f"{path}: expected a time such as 2027-01-01T00:00:00Z, got {_kind(value)}")


# --- reading ---------------------------------------------------------------------------------------------------------


def parse_key_file(text: str) -> KeyFile:
    """Validate the text of a key file; raises `KeyFileError` naming the first bad field."""
    try:
        doc = yaml.load(text, Loader=_Loader)  # a safe loader: SafeLoader, or its C build
    except yaml.YAMLError as exc:
        raise KeyFileError(_yaml_problem(exc)) from None
    # An empty document is refused rather than read as "no keys": a truncated file must not revoke every key.
    if not isinstance(doc, dict):
        raise KeyFileError(f"expected a mapping with `keys: [...]`, got {_kind(doc)}")
    _check_fields(doc, "", ("keys",))
    raw_keys = doc.get("keys")
    if raw_keys is None:
        raise KeyFileError("keys: required (an empty file of keys is `keys: []`)")
    if not isinstance(raw_keys, list):
        raise KeyFileError(f"keys: expected a list, got {_kind(raw_keys)}")
    records: list[KeyRecord] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_keys):
        record = _record(raw, f"keys[{i}]")
        if record.id in seen:
            raise KeyFileError(f"keys[{i}].id: duplicate id {record.id} (also keys[{seen[record.id]}])")
        seen[record.id] = i
        records.append(record)
    return KeyFile(tuple(records))


def load_key_file(path: str | Path) -> KeyFile:
    """Read and validate a key file; `FileNotFoundError` when it does not exist."""
    return parse_key_file(Path(path).read_text(encoding="utf-8"))


def _record(raw: Any, path: str) -> KeyRecord:
    if not isinstance(raw, dict):
        raise KeyFileError(f"{path}: expected a mapping, got {_kind(raw)}")
    _check_fields(raw, path, _RECORD_FIELDS)
    for name in ("id", "hash", "user"):
        if name not in raw:
            raise KeyFileError(f"{path}.{name}: required")
    key_id, hashed = raw["id"], raw["hash"]
    if not isinstance(key_id, str) or not ID_PATTERN.match(key_id):
        # YAML reads an id of digits only as a number (and one with a leading 0 as octal): it must be quoted.
        hint = " (an id of digits only must be quoted)" if isinstance(key_id, int) else ""
        raise KeyFileError(f"{path}.id: expected 16 lowercase hex characters, got {key_id!r}{hint}")
    if not isinstance(hashed, str) or not HASH_PATTERN.match(hashed):
        # The value is a hash, never a secret, but it is not echoed: a pasted raw key would land in a log.
        raise KeyFileError(f"{path}.hash: expected sha256$<32 hex salt>$<64 hex digest>")
    return KeyRecord(
        id=key_id,
        hash=hashed,
        user=_text(raw["user"], f"{path}.user"),
        team=_text(raw["team"], f"{path}.team", allow_empty=True) if raw.get("team") is not None else "",
        models=_globs(raw.get("models"), f"{path}.models"),
        deny=_globs(raw.get("deny"), f"{path}.deny"),
        limits=_limits(raw.get("limits"), f"{path}.limits"),
        labels=_labels(raw.get("labels"), f"{path}.labels"),
        created=_optional_time(raw.get("created"), f"{path}.created"),
        expires=_optional_time(raw.get("expires"), f"{path}.expires"),
        revoked=_optional_time(raw.get("revoked"), f"{path}.revoked"),
    )


def _limits(raw: Any, path: str) -> Limits:
    if raw is None:
        return Limits()
    if not isinstance(raw, dict):
        raise KeyFileError(f"{path}: expected a mapping, got {_kind(raw)}")
    _check_fields(raw, path, (*_COUNTS, "budget"))
    counts = {name: _count(raw.get(name, 0), f"{path}.{name}") for name in _COUNTS}
    budget = _budget(raw["budget"], f"{path}.budget") if raw.get("budget") is not None else None
    return Limits(**counts, budget=budget)


def _budget(raw: Any, path: str) -> Budget:
    if not isinstance(raw, dict):
        raise KeyFileError(f"{path}: expected a mapping such as {{usd: 50, period: month}}, got {_kind(raw)}")
    _check_fields(raw, path, ("usd", "period"))
    usd = raw.get("usd")
    if isinstance(usd, bool) or not isinstance(usd, int | float) or not 0 < usd < math.inf:
        raise KeyFileError(f"{path}.usd: expected US dollars (a number > 0), got {usd!r}")
    period = raw.get("period", "month")
    if period not in PERIODS:
        raise KeyFileError(f"{path}.period: expected one of {', '.join(PERIODS)}, got {period!r}")
    return Budget(usd=float(usd), period=period)


def _count(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _INT64_MAX:
        raise KeyFileError(f"{path}: expected a whole number ≥ 0, got {value!r}")
    return value


def _text(value: Any, path: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise KeyFileError(f"{path}: expected a string, got {_kind(value)}")
    if not value.strip() and not allow_empty:
        raise KeyFileError(f"{path}: must not be empty")
    if _CONTROL.search(value):
        raise KeyFileError(f"{path}: must not contain control characters")
    return value


def _globs(raw: Any, path: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise KeyFileError(f"{path}: expected a list of model globs, got {_kind(raw)}")
    return tuple(_text(v, f"{path}[{i}]") for i, v in enumerate(raw))


def _labels(raw: Any, path: str) -> Mapping[str, str]:
    if raw is None:
        return _no_labels()
    if not isinstance(raw, dict):
        raise KeyFileError(f"{path}: expected a mapping of strings, got {_kind(raw)}")
    labels: dict[str, str] = {}
    for k, v in raw.items():
        if not isinstance(k, str) or not k.strip() or _CONTROL.search(k):
            raise KeyFileError(f"{path}: a label name must be a non-empty string, got {k!r}")
        name = k
        if not isinstance(v, str):
            raise KeyFileError(f"{path}.{name}: expected a string (quote numbers and booleans), got {_kind(v)}")
        labels[name] = _text(v, f"{path}.{name}", allow_empty=True)
    return MappingProxyType(labels)


def _optional_time(value: Any, path: str) -> datetime | None:
    return None if value is None else parse_time(value, path)


def _check_fields(raw: dict[Any, Any], path: str, allowed: tuple[str, ...]) -> None:
    # A misspelt field (`model:` for `models:`) would silently grant every model, so unknown fields are refused.
    for name in raw:
        if name not in allowed:
            where = f"{path}.{name}" if path else str(name)
            raise KeyFileError(f"{where}: unknown field (expected one of {', '.join(allowed)})")


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # One line, and no quoted snippet of the file: the line at fault might hold a secret pasted by mistake.
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"not valid YAML{where}: {getattr(exc, 'problem', None) or type(exc).__name__}"


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


# --- writing ---------------------------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Block style for keys, one line for each glob list, label map and budget, and plain `2027-01-01T00:00:00Z`."""


class _FlowList(list[str]):
    """A list written on one line."""


class _FlowDict(dict[str, Any]):
    """A mapping written on one line."""


def _represent_time(dumper: yaml.SafeDumper, value: datetime) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:timestamp", format_time(value))


def _represent_flow_list(dumper: yaml.SafeDumper, value: _FlowList) -> yaml.SequenceNode:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)


def _represent_flow_dict(dumper: yaml.SafeDumper, value: _FlowDict) -> yaml.MappingNode:
    return dumper.represent_mapping("tag:yaml.org,2002:map", value.items(), flow_style=True)


_Dumper.add_representer(datetime, _represent_time)
_Dumper.add_representer(_FlowList, _represent_flow_list)
_Dumper.add_representer(_FlowDict, _represent_flow_dict)


def dump_key_file(keys: KeyFile) -> str:
    """The YAML text of a key file; fields at their defaults are left out."""
    doc = {"keys": [_record_dict(r) for r in keys.keys]}
    return _HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _record_dict(record: KeyRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"id": record.id, "hash": record.hash, "user": record.user}
    if record.team:
        out["team"] = record.team
    if record.models:
        out["models"] = _FlowList(record.models)
    if record.deny:
        out["deny"] = _FlowList(record.deny)
    limits: dict[str, Any] = {name: getattr(record.limits, name) for name in _COUNTS if getattr(record.limits, name)}
    if record.limits.budget is not None:
        limits["budget"] = _FlowDict(usd=record.limits.budget.usd, period=record.limits.budget.period)
    if limits:
        out["limits"] = limits
    if record.labels:
        out["labels"] = _FlowDict(record.labels)
    for name in ("created", "expires", "revoked"):
        if getattr(record, name) is not None:
            out[name] = getattr(record, name)
    return out


def save_key_file(path: str | Path, keys: KeyFile) -> None:
    """Replace the file with `keys`, atomically, mode 0600, under the writers' lock."""
    target = _resolve(path)
    with _writer_lock(target):
        _write(target, keys)


def modify_key_file(path: str | Path, change: Callable[[KeyFile], KeyFile], *, create: bool = False) -> KeyFile:
    """Read the file, apply `change`, and write the result, all under the writers' lock; returns the new keys.

    With `create`, a missing file counts as empty. When `change` returns its argument unchanged nothing is written;
    when it raises, nothing is written and the exception propagates.
    """
    target = _resolve(path)
    with _writer_lock(target):
        try:
            current = load_key_file(target)
        except FileNotFoundError:
            if not create:
                raise
            current = KeyFile()
        changed = change(current)
        if changed is not current:
            _write(target, changed)
        return changed


def _resolve(path: str | Path) -> Path:
    # Through a symlink, the file it points at is replaced, not the link; every writer then shares one lock file.
    return Path(os.path.realpath(path))


@contextlib.contextmanager
def _writer_lock(target: Path) -> Iterator[None]:
    # A sibling lock file, never the key file itself: the key file is replaced on every write, so its inode changes.
    fd = os.open(f"{target}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _write(target: Path, keys: KeyFile) -> None:
    text = dump_key_file(keys)
    if parse_key_file(text) != keys:  # never write a file the server would refuse or read differently
        raise KeyFileError("internal error: the key file would not read back as written")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)
