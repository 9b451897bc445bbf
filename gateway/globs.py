"""Model-name globs, as auth decisions and limit rules write them: `*` within one `/`-separated segment, `**` across."""

from __future__ import annotations

import re
from collections.abc import Iterable


def compile_globs(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One regex matching any of `patterns` (use `fullmatch`); None for no patterns. Other characters are literal."""
    alternatives = []
    for pattern in patterns:
        pieces = re.split(r"(\*\*|\*)", pattern)
        alternatives.append("".join("[^/]*" if p == "*" else ".*" if p == "**" else re.escape(p) for p in pieces if p))
    if not alternatives:
        return None
    return re.compile("|".join(f"(?:{a})" for a in alternatives), re.DOTALL)
