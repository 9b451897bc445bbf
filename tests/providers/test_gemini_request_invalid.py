"""What a client sent that a Gemini backend cannot take: an `InvalidRequestError` naming the field, raised while
translating, before any I/O (found by tests/e2e/test_hostile_bodies.py)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.codec.openai_decode import decode_chat_params
from gateway.errors import InvalidRequestError
from gateway.providers.gemini_request import encode_generate_request

HI = [{"role": "user", "content": "hi"}]


def _encode(**body: Any) -> dict[str, Any]:
    params, _ = decode_chat_params({"model": "flash", "messages": HI, **body})
    return encode_generate_request(params)


@pytest.mark.parametrize("key", ["generationConfig", "generation_config"])
@pytest.mark.parametrize("value", ["a string", [1, 2], 5, True])
def test_a_generation_config_that_is_not_an_object_is_refused(key: str, value: object) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        _encode(**{key: value})
    assert caught.value.param == key
    assert "expected an object" in caught.value.message


def test_a_generation_config_object_still_merges() -> None:
    body = _encode(temperature=0.5, generationConfig={"topK": 3, "temperature": 0.1})
    assert body["generationConfig"] == {"temperature": 0.1, "topK": 3}


@pytest.mark.parametrize("role", ["system", "developer"])
def test_only_system_messages_are_refused(role: str) -> None:
    params, _ = decode_chat_params({"model": "flash", "messages": [{"role": role, "content": "rules"}]})
    with pytest.raises(InvalidRequestError) as caught:
        encode_generate_request(params)
    assert caught.value.param == "messages"
    assert "only system messages" in caught.value.message


def test_an_extra_field_may_not_replace_the_translated_contents() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        _encode(contents="overwrite")
    assert caught.value.param == "contents"


def test_a_native_system_instruction_is_taken_when_the_request_has_none() -> None:
    body = _encode(systemInstruction={"parts": [{"text": "rules"}]}, safetySettings=[])
    assert body["systemInstruction"] == {"parts": [{"text": "rules"}]}
    assert body["safetySettings"] == []
    with pytest.raises(InvalidRequestError) as caught:
        params, _ = decode_chat_params(
            {"model": "f", "messages": [{"role": "system", "content": "mine"}, *HI], "systemInstruction": {}}
        )
        encode_generate_request(params)
    assert caught.value.param == "systemInstruction"
