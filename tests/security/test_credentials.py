"""What counts as a credential (`gateway.credentials`): every known shape masked wherever it stands, and the
gateway's own words (request ids, trace ids, model names, hashes) left alone."""

from __future__ import annotations

import pytest

from gateway.credentials import MASK, looks_like_credential, mask_credentials
from gateway.errors import InvalidRequestError, NotFoundError

KEYS = [
    "tgk_0123456789abcdef_AbCd-EfGh_IjKlMnOpQrStUvWxYz0123456789",
    "sk-proj-AbC123xyz_789-QQ",
    "sk-ant-api03-abcdefgh",
    "sk-abcdef123456",
    "AIzaSyA1234567890abcdefghijklmnopqrstu",
    "ghp_abcdefghijklmnopqrstuvwx1234",
    "xoxb-1234567890-abcdefghij",
    "AKIAIOSFODNN7EXAMPLE",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "Zx9AbCdEfGhIjKlMnOpQrStUvWxYz0123456789ab",  # a long random token with no known prefix
]
WORDS = [
    "req_0123456789abcdef01234567",
    "4bf92f3577b34da6a3ce929d0e0e4736",
    "gpt-4o-mini",
    "meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo",
    "Qwen2.5-72B-Instruct-GPTQ-Int4",
    "accounts/fireworks/models/llama-v3p1-405b-instruct",
    "claude-sonnet-4-5-20250929",
    "sha256$" + "0" * 32,
    "550e8400-e29b-41d4-a716-446655440000",
    "task-abcdefgh and desk-123456",
    "ANTHROPICMESSAGESSTREAMINGRESPONSES",  # long, but one case and no digit: a word
]


@pytest.mark.parametrize("key", KEYS)
def test_keys_are_masked_wherever_they_stand(key: str) -> None:
    for text in (key, f"model '{key}' does not exist", f'{{"x-request-id": "{key}"}}', f"a/{key}/b"):
        masked = mask_credentials(text)
        assert key not in masked
        assert MASK in masked
    assert looks_like_credential(key)


@pytest.mark.parametrize("word", WORDS)
def test_the_gateways_own_words_are_left_alone(word: str) -> None:
    assert mask_credentials(word) == word
    assert not looks_like_credential(word)


def test_errors_never_carry_a_key() -> None:
    key = KEYS[0]
    error = NotFoundError(f"The model '{key}' does not exist", param=f"metadata.{key}")
    assert key not in error.message and key not in str(error) and key not in str(error.to_openai())
    assert error.param == f"metadata.{MASK}"
    assert key not in repr(InvalidRequestError(f"got {key!r}"))
