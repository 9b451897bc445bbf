"""What a credential looks like, so that one a client sends where it does not belong (a model name, a request id, a
body field) is masked before it is echoed in an error, recorded or logged.

The shapes are the ones keys take in the wild: the gateway's own `tgk_<id>_<secret>`, OpenAI's and Anthropic's
`sk-…` (`sk-proj-…`, `sk-ant-…`), Google's `AIza…`, GitHub's `ghp_…`, Slack's `xox?-…`, AWS access key ids, JWTs,
and, as a heuristic for the rest, a long unbroken run of letters and digits mixing upper case, lower case and
digits (random tokens look like that; model names, request ids and hex digests do not). A clean text costs one
substring test per shape and one scan for long runs.

This module is at the bottom of the house (it imports nothing of tollgate), so errors, codecs and telemetry share it.
"""

from __future__ import annotations

import re
import string

MASK = "****"

# Exact shapes. A value stops where a token's alphabet stops, so a masked JSON string stays a JSON string.
_SHAPED = re.compile(
    r"(?<![A-Za-z0-9])tgk_[A-Za-z0-9_-]{8,}"  # tollgate's own keys (authsvc/keys.py)
    r"|\bsk-[A-Za-z0-9_-]{6,}"  # OpenAI (sk-, sk-proj-) and Anthropic (sk-ant-) keys
    r"|\bAIza[0-9A-Za-z_-]{30,}"  # Google API keys
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}"  # GitHub tokens
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"  # Slack tokens
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"  # AWS access key ids
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"  # JWTs (a JSON header starts `eyJ`)
)
# In lower case; one is in every shaped match, and a clean text is rid of the regex by these substring tests.
_HINTS = ("tgk_", "sk-", "aiza", "gh", "xox", "akia", "asia", "eyj")
# Random tokens without a known prefix: 24 or more letters and digits in one run, with upper, lower and a digit.
# Python's regex engine is slow to scan a whole line, so runs are found with str.translate (letters and digits to
# "a", the rest to " ") and str.find, in C.
_RUN_MIN = 24
_ALNUM = frozenset(string.ascii_letters + string.digits)
_RUNS_TABLE = str.maketrans({chr(c): "a" if chr(c) in _ALNUM else " " for c in range(128)})
_RUN_MARK = "a" * _RUN_MIN


def _token_like(run: str) -> bool:
    return not run.islower() and not run.isupper() and any(c.isdigit() for c in run) and not run.isdigit()


def _mask_runs(text: str) -> str:
    shape = text.translate(_RUNS_TABLE)  # non-ASCII characters stay as they are: never "a"
    start = shape.find(_RUN_MARK)
    if start < 0:
        return text
    pieces: list[str] = []
    done = 0
    while start >= 0:
        end = shape.find(" ", start)  # the run's end; anything not "a" ends it, so look for the first such
        end = _run_end(shape, start, len(text) if end < 0 else end)
        if _token_like(text[start:end]):  # hex ids and long words are runs too, left as they are
            pieces += [text[done:start], MASK]
            done = end
        start = shape.find(_RUN_MARK, end)
    return "".join([*pieces, text[done:]]) if pieces else text


def _run_end(shape: str, start: int, limit: int) -> int:
    """Where the run of "a" from `start` stops, at `limit` at most (a non-ASCII character may stop it sooner)."""
    run = shape[start:limit]
    stripped = run.lstrip("a")
    return limit - len(stripped)


def mask_credentials(text: str, lower: str | None = None) -> str:
    """`text` with everything shaped like a credential replaced by `MASK`; `lower` is `text.lower()` when the
    caller has it already."""
    if lower is None:
        lower = text.lower()
    if any(hint in lower for hint in _HINTS):
        text = _SHAPED.sub(MASK, text)
    return _mask_runs(text) if len(text) >= _RUN_MIN else text


def looks_like_credential(text: str) -> bool:
    """Whether `text` holds something shaped like a credential."""
    return mask_credentials(text) != text
