"""`Redactor`: keys, configured secrets and PII masked; ordinary log content (times, ids, counts) left alone."""

from __future__ import annotations

import orjson
import pytest

from gateway.telemetry.redaction import MASK, Redactor, luhn

VISA_TEST = "4111 1111 1111 1111"  # the documented Visa test number: passes Luhn
NOT_A_CARD = "4111 1111 1111 1112"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer tg-abc123def456", "tg-abc123def456"),
        ("authorization=bearer abc.def.ghi", "abc.def.ghi"),
        ('{"x-api-key": "k-very-secret-1"}', "k-very-secret-1"),
        ("api_key='hunter22hunter'", "hunter22hunter"),
        ("calling with sk-proj-AbC123xyz_789-QQ now", "sk-proj-AbC123xyz_789-QQ"),
        ("sk-ant-api03-abcdefgh in a repr", "sk-ant-api03-abcdefgh"),
        ("key=AIzaSyA1234567890abcdefghijklmnopqrstu", "AIzaSyA1234567890abcdefghijklmnopqrstu"),
        ("write to jane.doe+work@example.co.uk please", "jane.doe+work@example.co.uk"),
        ("call +44 20 7946 0958 tomorrow", "+44 20 7946 0958"),
        ("or (555) 867-5309 at night", "(555) 867-5309"),
        ("or 555.867.5309 at night", "555.867.5309"),
        (f"card {VISA_TEST} exp 12/30", VISA_TEST),
        ("card 5500-0000-0000-0004!", "5500-0000-0000-0004"),
        ("card 378282246310005.", "378282246310005"),
    ],
)
def test_masked(text: str, secret: str) -> None:
    masked = Redactor()(text)
    assert secret not in masked
    assert MASK in masked


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-23 13:48:12,123 INFO tollgate: http listening on 127.0.0.1:8080",
        '{"request_id": "req_0123456789abcdef01234567", "latency_ms": 12.345, "input_tokens": 1234567}',
        f"order {NOT_A_CARD} is not a card number",
        "1700000000123 ns since the epoch",
        "model gpt-4o-mini, backend openai",
    ],
)
def test_left_alone(text: str) -> None:
    assert Redactor()(text) == text


def test_configured_secrets_and_patterns_and_pii_choice() -> None:
    redactor = Redactor(pii=("email",), patterns=[r"EMP-\d{6}"])
    redactor.add_secrets(["upstream-key-value", "abc"])  # too short to mask safely: ignored
    assert redactor("key upstream-key-value, id EMP-123456, abc") == f"key {MASK}, id {MASK}, abc"
    assert redactor(f"card {VISA_TEST}") == f"card {VISA_TEST}"  # card masking not chosen
    assert redactor("mail a@b.io") == f"mail {MASK}"


def test_a_masked_json_line_is_still_json() -> None:
    line = orjson.dumps({"msg": "Bearer tok-123456 from a@b.io", "card": VISA_TEST, "h": 'x-api-key: "s3cr3t!"'})
    parsed = orjson.loads(Redactor()(line.decode()))
    assert parsed["msg"] == f"Bearer {MASK} from {MASK}"
    assert parsed["card"] == MASK


def test_luhn() -> None:
    assert luhn("4111111111111111")
    assert luhn("79927398713")
    assert not luhn("79927398710")
