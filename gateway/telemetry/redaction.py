"""`Redactor`: masks API keys, configured secrets and PII (emails, phone and card numbers) in any text.

Keys are found by where they stand (`Bearer …`, `api_key=…`) and by their shape wherever they stand
(`gateway.credentials`: `tgk_…`, `sk-…`, JWTs, long random tokens…), so one a client sends as a model name or a
request id is masked too.

It runs on every log line, so a clean line must cost little: each kind has a cheap test first (a substring, an `@`,
a run of ten or more digits) and its regular expression runs only where that test hits. Card numbers are masked
only when they pass the Luhn check, so request counts and timestamps survive. Masks never contain quotes or
backslashes: a masked JSON line is still JSON.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from gateway.credentials import MASK, mask_credentials

__all__ = ["MASK", "Redactor", "luhn"]
_SECRET_MIN = 6  # shorter configured values would mask ordinary words

# Credentials in the forms they take in headers, URLs, JSON and repr()s. A value stops at a quote, escaped or not,
# so a masked JSON string stays a JSON string.
_KEYS = re.compile(
    r"(?P<bearer>(?i:bearer)\s+)[^\s\"',;\\]+"
    r"|(?P<named>(?i:x-api-key|api[_-]?key|authorization|x-goog-api-key)(?:\\?[\"'])?\s*[:=]\s*(?:\\?[\"'])?)"
    r"(?!(?i:bearer)\s)[^\s\"',;}\\]+"
)
_KEY_HINTS = ("bearer", "api", "authoriz")  # in lower case; one of them is in every match
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# Where a phone or card number could be: ten or more digits with separators between. Python's regex engine is slow
# on digit-heavy lines (timestamps, ids), so a line is first tested with bytes.translate (digits to 9, separators
# dropped) and a substring search, and only a line that has such a run is searched, on those stretches only.
_NUMBERS = re.compile(r"[+(\d][\d ().-]{8,}\d")
_DIGITS_TO_NINE = bytes.maketrans(b"0123456789", b"9999999999")
_SEPARATORS = b" ().-+"
_TEN_DIGITS = b"9" * 10
_PHONE = r"(?<![\w+])(?:\+\d[\d ().-]{6,}\d|\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4})(?!\w)"  # +… or North American 3-3-4
_CARD = r"(?<!\w)(?P<card>(?:\d[ -]?){12,18}\d)(?!\w)"


def luhn(digits: str) -> bool:
    """Whether a digit string passes the Luhn checksum that every payment card number carries."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _mask_key(match: re.Match[str]) -> str:
    return (match.group("bearer") or match.group("named") or "") + MASK


def _mask_number(match: re.Match[str]) -> str:
    card = match.group("card")
    if card is None:
        return MASK  # a phone number
    return MASK if luhn(card.replace(" ", "").replace("-", "")) else card


class Redactor:
    """Masks what must never reach a log."""

    def __init__(self, pii: Iterable[str] = ("email", "phone", "card"), patterns: Iterable[str] = ()) -> None:
        kinds = set(pii)
        self._email = "email" in kinds
        numbers = [p for kind, p in (("phone", _PHONE), ("card", _CARD)) if kind in kinds]
        if "card" not in kinds:
            numbers.append(r"(?P<card>(?!))")  # never matches; keeps the group for _mask_number
        self._numbers = re.compile("|".join(numbers)) if len(numbers) > 1 or "card" in kinds else None
        listed = list(patterns)
        self._custom = re.compile("|".join(f"(?:{p})" for p in listed)) if listed else None
        self._secrets: list[str] = []

    def add_secrets(self, values: Iterable[str]) -> None:
        """Mask these literal values too (backend keys, header values); very short ones are ignored."""
        fresh = {v for v in values if len(v) >= _SECRET_MIN} - set(self._secrets)
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted([*self._secrets, *fresh], key=len, reverse=True)

    def __call__(self, text: str) -> str:
        """`text` with every secret and PII match masked."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        lower = text.lower()
        if any(hint in lower for hint in _KEY_HINTS):
            text = _KEYS.sub(_mask_key, text)
        text = mask_credentials(text, lower)  # `lower` may predate the line above: its masks add no hint
        if self._email and "@" in text:
            text = _EMAIL.sub(MASK, text)
        if self._numbers is not None and _TEN_DIGITS in text.encode("utf-8", "replace").translate(
            _DIGITS_TO_NINE, _SEPARATORS
        ):
            text = self._mask_numbers(text, self._numbers)
        if self._custom is not None:
            text = self._custom.sub(MASK, text)
        return text

    @staticmethod
    def _mask_numbers(text: str, exact: re.Pattern[str]) -> str:
        pieces: list[str] = []
        done = 0
        for stretch in _NUMBERS.finditer(text):
            # Searched in place, so the exact patterns' look-behind and look-ahead see the neighbouring characters.
            start, end = stretch.span()
            position = start
            while (found := exact.search(text, position, min(len(text), end + 1))) is not None:
                pieces += [text[done : found.start()], _mask_number(found)]
                done = position = found.end()
        return "".join([*pieces, text[done:]]) if pieces else text
