"""Log output: readable text on a terminal, one JSON object per line otherwise, masked either way.

`configure_logging` puts one handler on the root logger whose formatter masks the finished line (message, arguments,
extras and tracebacks alike), so no code path can leak a key or configured PII. The access log is one record per
request on the `tollgate.access` logger, written at the end of the call from what metering already knows.
"""

from __future__ import annotations

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
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.NOTSET if config.access_log else logging.WARNING)
    return formatter
