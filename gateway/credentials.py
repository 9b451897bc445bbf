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
_HINTS = ("tgk_", "sk-", "aiza", "gh", "xox", "akia", "asia", "eyj")  # in lower case; one is in every shaped match
# Random tokens without a known prefix: 24 or more letters and digits in one run, with upper, lower and a digit.
_RUN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]{24,}(?![A-Za-z0-9])")


def _token_like(run: str) -> bool:
    return not run.islower() and not run.isupper() and any(c.isdigit() for c in run) and not run.isdigit()


def _mask_run(match: re.Match[str]) -> str:
    return MASK if _token_like(match.group()) else match.group()


def mask_credentials(text: str) -> str:
    """`text` with everything shaped like a credential replaced by `MASK`."""
    lower = text.lower()
    if any(hint in lower for hint in _HINTS):
        text = _SHAPED.sub(MASK, text)
    if len(text) >= 24:
        text = _RUN.sub(_mask_run, text)
    return text


def looks_like_credential(text: str) -> bool:
    """Whether `text` holds something shaped like a credential."""
    return mask_credentials(text) != text
