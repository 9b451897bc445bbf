"""`tollgate keys add|list|revoke`: manage the key file the auth server reads.

    tollgate keys add --file FILE --user U [--team T] [--models GLOB ...] [--deny GLOB ...] [--expires 30d | TIME]
                      [--rpm N] [--tpm N] [--concurrency N] [--budget USD] [--budget-period day|week|month|total]
                      [--label k=v ...]
    tollgate keys list --file FILE
    tollgate keys revoke --file FILE ID

`add` prints the new key on stdout, alone on its line, exactly once: only its hash is written to the file.
Exit codes: 0 done, 1 unknown id or an I/O error, 2 bad input or a bad key file.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from types import MappingProxyType

from authsvc.keyfile import (
    PERIODS,
    Budget,
    KeyFile,
    KeyFileError,
    KeyRecord,
    Limits,
    format_time,
    load_key_file,
    modify_key_file,
    parse_time,
    utc_now,
)
from authsvc.keys import ID_PATTERN, generate_key, parse_key

_RELATIVE = re.compile(r"^\s*(\d{1,6})\s*([mhdw])\s*$")
_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _UsageError(ValueError):
    """Bad command-line input: reported on stderr with exit code 2."""


def add_key_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `keys add`, `keys list` and `keys revoke`."""
    keys = sub.add_parser("keys", help="make, list and revoke API keys in a key file")
    commands = keys.add_subparsers(dest="keys_command", required=True, metavar="{add,list,revoke}")

    add = commands.add_parser("add", help="make a key; prints it once")
    add.add_argument("--file", required=True, metavar="FILE", help="the key file (made if absent)")
    add.add_argument("--user", required=True, type=_text, help="who the key belongs to")
    add.add_argument("--team", type=_text)
    add.add_argument("--models", nargs="+", action="extend", default=[], type=_text, metavar="GLOB")
    add.add_argument("--deny", nargs="+", action="extend", default=[], type=_text, metavar="GLOB")
    add.add_argument("--expires", metavar="30d|TIME", help="a lifetime (90m, 12h, 30d, 2w) or a time (ISO 8601)")
    add.add_argument("--rpm", type=_count, default=0, help="requests per minute (0: no limit)")
    add.add_argument("--tpm", type=_count, default=0, help="tokens per minute (0: no limit)")
    add.add_argument("--concurrency", type=_count, default=0, help="concurrent requests (0: no limit)")
    add.add_argument("--budget", type=_usd, metavar="USD", help="spend limit in US dollars per period")
    add.add_argument("--budget-period", choices=PERIODS, help="when the budget resets (default: month)")
    add.add_argument("--label", action="append", default=[], type=_label, metavar="K=V")
    add.set_defaults(run=_add)

    listing = commands.add_parser("list", help="list keys (never their hashes)")
    listing.add_argument("--file", required=True, metavar="FILE")
    listing.set_defaults(run=_list)

    revoke = commands.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("--file", required=True, metavar="FILE")
    revoke.add_argument("id", help="the key's id (16 hex characters), never the key itself")
    revoke.set_defaults(run=_revoke)


def _add(args: argparse.Namespace) -> int:
    now = utc_now().replace(microsecond=0)
    try:
        record = _new_record(args, now)
    except _UsageError as exc:
        return _fail(args, str(exc), 2)
    new = generate_key()
    record = dataclasses.replace(record, id=new.id, hash=new.hash)
    code = _modify(args, lambda keys: keys.with_key(record), create=True)
    if code:
        return code
    print(new.raw, flush=True)
    print(f"key id {new.id} for {record.user}: store it now, it is not shown again", file=sys.stderr)
    return 0


def _new_record(args: argparse.Namespace, now: datetime) -> KeyRecord:
    if args.budget_period is not None and args.budget is None:
        raise _UsageError("--budget-period needs --budget")
    labels: dict[str, str] = {}
    for name, value in args.label:
        if name in labels:
            raise _UsageError(f"--label: {name} given twice")
        labels[name] = value
    budget = Budget(args.budget, args.budget_period or "month") if args.budget is not None else None
    return KeyRecord(
        id="",
        hash="",
        user=args.user,
        team=args.team or "",
        models=tuple(args.models),
        deny=tuple(args.deny),
        limits=Limits(args.rpm, args.tpm, args.concurrency, budget),
        labels=MappingProxyType(labels),
        created=now,
        expires=_expiry(args.expires, now) if args.expires is not None else None,
    )


def _list(args: argparse.Namespace) -> int:
    try:
        keys = load_key_file(args.file)
    except FileNotFoundError:
        return _fail(args, f"{args.file}: no such key file", 2)
    except KeyFileError as exc:
        return _fail(args, f"{args.file}: {exc}", 2)
    except OSError as exc:
        return _fail(args, str(exc), 1)
    if not keys.keys:
        print(f"no keys in {args.file}", file=sys.stderr)
        return 0
    now = utc_now()
    rows = [("ID", "USER", "TEAM", "MODELS", "STATUS", "EXPIRES")]
    for k in keys.keys:
        models = ",".join([*k.models, *(f"!{g}" for g in k.deny)]) if k.models or k.deny else "(all)"
        expires = format_time(k.expires) if k.expires else "never"
        rows.append((k.id, k.user, k.team or "-", models, k.status(now), expires))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _revoke(args: argparse.Namespace) -> int:
    if not ID_PATTERN.match(args.id):
        # Never echoed: it may be a whole key pasted by mistake.
        what = "that is a whole key: pass only its id" if parse_key(args.id) else "expected a key id"
        return _fail(args, f"{what} (16 lowercase hex characters, as `tollgate keys list` shows)", 2)
    now = utc_now().replace(microsecond=0)
    found: list[KeyRecord] = []

    def revoke(keys: KeyFile) -> KeyFile:
        record = keys.get(args.id)
        if record is None:
            raise LookupError(args.id)
        found.append(record)
        return keys if record.revoked is not None else keys.replace(dataclasses.replace(record, revoked=now))

    try:
        code = _modify(args, revoke, create=False)
    except LookupError:
        return _fail(args, f"no key {args.id} in {args.file}", 1)
    if code:
        return code
    record = found[0]
    if record.revoked is not None:
        print(f"key {record.id} ({record.user}) was already revoked at {format_time(record.revoked)}")
    else:
        print(f"revoked key {record.id} ({record.user})")
        print("the auth server refuses it once it reloads; gateways, once their cached decision ends", file=sys.stderr)
    return 0


def _modify(args: argparse.Namespace, change: Callable[[KeyFile], KeyFile], *, create: bool) -> int:
    """Apply `change` to the key file; 0, or the exit code of a failure already reported."""
    try:
        modify_key_file(args.file, change, create=create)
    except FileNotFoundError as exc:
        # With `create`, only the directory can be missing.
        return _fail(args, str(exc), 1) if create else _fail(args, f"{args.file}: no such key file", 2)
    except KeyFileError as exc:
        return _fail(args, f"{args.file}: {exc}", 2)
    except OSError as exc:
        return _fail(args, str(exc), 1)
    return 0


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    print(f"tollgate keys {args.keys_command}: {message}", file=sys.stderr)
    return code


def _expiry(text: str, now: datetime) -> datetime:
    match = _RELATIVE.match(text)
    try:
        at = now + int(match[1]) * _UNITS[match[2]] if match else parse_time(text, "--expires")
    except (KeyFileError, OverflowError):
        raise _UsageError(
            "--expires: expected a lifetime such as 90m, 12h, 30d or 2w, or a time such as 2027-01-01T00:00:00Z"
        ) from None
    if at <= now:
        raise _UsageError(f"--expires: {format_time(at)} is not in the future")
    return at


# argparse turns the ValueErrors of these into `error: argument --rpm: invalid _count value: '...'`; the
# ArgumentTypeErrors carry a better message.
def _text(value: str) -> str:
    if not value.strip() or _CONTROL.search(value):
        raise argparse.ArgumentTypeError("expected a non-empty string without control characters")
    return value


def _count(value: str) -> int:
    if not value.strip().isdigit() or int(value) > 2**63 - 1:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 0, got {value!r}")
    return int(value)


def _usd(value: str) -> float:
    try:
        usd = float(value)
    except ValueError:
        usd = math.nan
    if not 0 < usd < math.inf:
        raise argparse.ArgumentTypeError(f"expected US dollars (a number > 0), got {value!r}")
    return usd


def _label(value: str) -> tuple[str, str]:
    name, sep, text = value.partition("=")
    if not sep or not name.strip() or _CONTROL.search(value):
        raise argparse.ArgumentTypeError(f"expected name=value, got {value!r}")
    return name, text
