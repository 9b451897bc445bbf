"""The examples file: which prompts each choice serves, and how close a prompt must be.

threshold: 0.6            # optional, default 0.6
choices:
  strong: ["prove that there are infinitely many primes", "design a distributed lock"]
  weak: ["hi", "what time is it in Paris"]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.config import ConfigError


@dataclass(frozen=True, slots=True)
class Examples:
    """Each choice's example prompts, in file order, and the threshold."""

    choices: tuple[tuple[str, tuple[str, ...]], ...]
    threshold: float = 0.6


def _examples(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{path}: expected a non-empty list of example prompts")
    for i, text in enumerate(value):
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"{path}[{i}]: expected a non-blank string")
    return tuple(value)


def parse_examples(text: str) -> Examples:
    """Validate the file's YAML text; every problem names its field."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError("expected a mapping with `choices`")
    unknown = set(raw) - {"choices", "threshold"}
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown field")
    threshold = raw.get("threshold", 0.6)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold <= 1:
        raise ConfigError(f"threshold: expected a cosine similarity in (0, 1], got {threshold!r}")
    choices = raw.get("choices")
    if not isinstance(choices, dict) or not choices:
        raise ConfigError("choices: expected a mapping of choice name to example prompts")
    parsed = tuple((str(name), _examples(examples, f"choices.{name}")) for name, examples in choices.items())
    return Examples(parsed, float(threshold))


def load_examples(path: str | Path) -> Examples:
    """Read and validate the examples file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    return parse_examples(text)
