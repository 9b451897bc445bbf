"""Log output: readable text on a terminal, one JSON object per line otherwise, masked either way.

`configure_logging` puts one handler on the root logger whose formatter masks the finished line (message, arguments,
extras and tracebacks alike), so no code path can leak a key or configured PII. The access log is one record per
request on the `tollgate.access` logger, written at the end of the call from what metering already knows.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import time
from collections.abc import Iterable
from typing import IO, Any

import orjson

from gateway.config.telemetry import LogsConfig
from gateway.telemetry.redaction import Redactor

ACCESS_LOGGER = "tollgate.access"
AUDIT_LOGGER = "tollgate.audit"
# Attributes every LogRecord has; anything else on a record came in through `extra=` and is written out. A record's
# own attributes come first in its __dict__, so the extras are found without looking at those.
_INIT = len(logging.LogRecord("", 0, "", 0, "", None, None).__dict__)
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in itertools.islice(record.__dict__.items(), _INIT, None) if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and every `extra` field."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def _timestamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # strftime is a good part of a line's cost: once a second is enough
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage() if record.args else str(record.msg),
        }
        line.update(_extras(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except (TypeError, ValueError):  # a value even str() cannot help (a surrogate...): still one line
            return orjson.dumps({k: repr(v) for k, v in line.items()}).decode()


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value …` for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # the name is logging's
        """The message, then the record's extra fields."""
        text = super().formatMessage(record)
        extras = _extras(record)
        if extras:
            text += " " + " ".join(f"{k}={v}" for k, v in extras.items() if v not in ("", None))
        return text


class RedactingFormatter(logging.Formatter):
    """Formats with `inner`, then masks the whole finished line."""

    def __init__(self, inner: logging.Formatter, redactor: Redactor) -> None:
        super().__init__()
        self.inner = inner
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        """The masked line."""
        return self.redactor(self.inner.format(record))


class AccessLineHandler(logging.Handler):
    """The access log as JSON lines, made straight from its fields (`write`) without a `LogRecord`, a generic
    formatter or masking the whole line: every request writes one, so its cost is the logging's budget.

    Only the fields a client controls can carry a secret or PII (its own request id, the model name it sent; the key
    id comes from the auth server): those are masked like every other line, the few distinct model names and key
    ids once each. The rest are the gateway's own words. Inside an event loop, lines are written together at most
    `FLUSH_SECONDS` after the first of them (one write instead of one per request); `flush` (at exit too) writes
    what is pending.
    """

    CLIENT_FIELDS = ("model", "key_id")  # few distinct values: their masked form is remembered
    FLUSH_SECONDS = 0.05
    _MASKED_MAX = 4096

    def __init__(self, stream: IO[str], redactor: Redactor, formatter: JsonFormatter) -> None:
        super().__init__()
        self.stream = stream
        self._redactor = redactor
        self._formatter = formatter
        self._masked: dict[str, str] = {}
        self._pending: list[str] = []
        self.setFormatter(RedactingFormatter(formatter, redactor))

    def write(self, msg: str, fields: dict[str, Any]) -> None:
        """One access line from its fields."""
        line: dict[str, Any] = {
            "ts": self._formatter._timestamp(time.time()),  # the same clock format as every line
            "level": "INFO",
            "logger": ACCESS_LOGGER,
            "msg": msg,
        }
        line.update(fields)
        for name in self.CLIENT_FIELDS:
            value = line.get(name)
            if value:
                line[name] = self._mask(value)
        if own_id := line.get("client_request_id"):
            line["client_request_id"] = self._redactor(own_id)
        try:
            text = orjson.dumps(line, default=str).decode()
        except (TypeError, ValueError):  # a value even str() cannot help: still one line, masked whole
            text = self._redactor(orjson.dumps({k: repr(v) for k, v in line.items()}).decode())
        self._add(text + "\n")

    def _mask(self, value: str) -> str:
        masked = self._masked.get(value)
        if masked is None:
            if len(self._masked) >= self._MASKED_MAX:
                self._masked.clear()
            masked = self._masked[value] = self._redactor(value)
        return masked

    def _add(self, text: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop: nothing would flush later, so write now
            loop = None
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            self._pending.append(text)
            if len(self._pending) > 1:
                return  # a flush is already due
        if loop is None:
            self.flush()
        else:
            loop.call_later(self.FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Write the pending lines."""
        with self.lock:  # type: ignore[union-attr]
            pending, self._pending = self._pending, []
            if pending:
                self.stream.write("".join(pending))
                self.stream.flush()

    def emit(self, record: logging.LogRecord) -> None:
        """A record made the usual way (the front door's own lines): the whole line masked."""
        try:
            self._add(self.format(record) + "\n")
        except Exception:  # logging's contract: a failed line never fails the caller
            self.handleError(record)


def access_line_handler(logger: logging.Logger) -> AccessLineHandler | None:
    """The access logger's fast handler, when logging was configured with one (JSON output)."""
    handlers = logger.handlers
    return handlers[0] if handlers and isinstance(handlers[0], AccessLineHandler) else None


def formatter_for(config: LogsConfig, stream: IO[str]) -> logging.Formatter:
    """JSON or text by configuration; `auto` is text on a terminal and JSON otherwise."""
    text = config.format == "text" or (config.format == "auto" and stream.isatty())
    return TextFormatter() if text else JsonFormatter()


def configure_logging(
    config: LogsConfig, level: str, secrets: Iterable[str] = (), stream: IO[str] | None = None
) -> RedactingFormatter:
    """Replace the root logger's handlers with one masked handler on `stream` (stderr); returns its formatter."""
    out = stream if stream is not None else sys.stderr
    redactor = Redactor(config.pii, config.patterns)
    redactor.add_secrets([*config.secrets, *secrets])
    formatter = RedactingFormatter(formatter_for(config, out), redactor)
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Set either way: a reconfiguration with the access log back on must not inherit the last one's WARNING.
    access = logging.getLogger(ACCESS_LOGGER)
    access.setLevel(logging.NOTSET if config.access_log else logging.WARNING)
    for old in list(access.handlers):
        access.removeHandler(old)
    inner = formatter.inner
    # JSON lines: the access log gets its own cheap handler on the same stream; text goes through the root's.
    access.propagate = not isinstance(inner, JsonFormatter)
    if isinstance(inner, JsonFormatter):
        access.addHandler(AccessLineHandler(out, redactor, inner))
    return formatter
