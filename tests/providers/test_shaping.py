"""Per-backend request shaping: checked at load with the field's path, applied before any adapter translates."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.codec.openai_decode import decode_chat_params
from gateway.config import ConfigError, GatewayConfig, parse_config
from gateway.errors import ServiceUnavailableError
from gateway.providers.registry import build_providers
from gateway.providers.shaping import ShapedProvider
from tests.providers.conformance import recording_server

SHAPED = """
    defaults: {temperature: 0.2, max_tokens: 256, top_k: 40, stop: ["###"]}
    overrides: {response_format: {type: json_object}, safe_prompt: true, tool_choice: none}
    remove: [user, logit_bias, seed]
"""


def config(provider: str, url: str, shaping: str = SHAPED) -> GatewayConfig:
    return parse_config(
        f"""
auth: none
backends:
  - name: b
    provider: {provider}
    base_url: "{url}"
    api_key: k
{shaping}
models:
  - {{name: m, targets: [{{backend: b, model: upstream-model}}]}}
""",
        {},
    )


async def sent_body(provider_type: str, request: dict[str, Any], shaping: str = SHAPED) -> Any:
    async with recording_server({"status": 503, "body": {"error": {"message": "enough"}}}) as (url, received):
        providers = build_providers(config(provider_type, url + "/v1", shaping))
        params, _ = decode_chat_params(request)
        before = params.SerializeToString()
        try:
            with pytest.raises(ServiceUnavailableError):  # the reply is an error on purpose: only the request matters
                await providers["b"].complete("upstream-model", params)
        finally:
            await providers["b"].close()
        assert params.SerializeToString() == before, "the caller's params are never changed"
    return received[0].body


async def test_openai_compatible_backend_shapes_known_and_provider_fields() -> None:
    request = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.9,
        "user": "alice",
        "top_k": 5,
        "logit_bias": {"50256": -100},
        "seed": 1,
        "tool_choice": "auto",
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    body = await sent_body("openai", request)
    assert body == {
        "model": "upstream-model",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.9,  # the client's value wins over a default
        "max_tokens": 256,  # a default fills what the client left out
        "stop": ["###"],
        "top_k": 5,  # a provider's own field: the client's value wins over a default too
        "response_format": {"type": "json_object"},  # forced
        "safe_prompt": True,  # forced, though the schema does not know it
        "tool_choice": "none",  # forced over the client's
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }


async def test_gemini_backend_takes_the_same_shaping() -> None:
    shaping = """
    defaults: {safetySettings: [{category: HARM_CATEGORY_HARASSMENT, threshold: BLOCK_NONE}], temperature: 0.3}
    remove: [presence_penalty]
"""
    request = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "presence_penalty": 1.0}
    body = await sent_body("gemini", request, shaping)
    assert body == {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        "generationConfig": {"temperature": 0.3},
    }


def test_backend_without_shaping_is_not_wrapped() -> None:
    providers = build_providers(config("openai", "http://127.0.0.1:1/v1", ""))
    assert not isinstance(providers["b"], ShapedProvider)


@pytest.mark.parametrize(
    ("shaping", "message"),
    [
        ("defaults: {temperature: 5}", "backends[0].defaults.temperature: must be between 0 and 2, got 5"),
        ("overrides: {max_tokens: many}", "backends[0].overrides.max_tokens: expected an integer, got string"),
        ("overrides: {response_format: {type: xml}}", "backends[0].overrides.response_format.type: expected text"),
        ("defaults: {model: gpt-4o}", "backends[0].defaults.model: set by the client or the gateway"),
        ("overrides: {stream: true}", "backends[0].overrides.stream: set by the client or the gateway"),
        ("defaults: [temperature]", "backends[0].defaults: expected a mapping of request field to value"),
        ("remove: user", "backends[0].remove: expected a list of request field names"),
        ("remove: [user, messages]", "backends[0].remove[1]: 'messages' is set by the client or the gateway"),
    ],
)
def test_bad_shaping_is_refused_with_its_path(shaping: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:  # the config's shape when it is read, the values when providers are built
        build_providers(config("openai", "http://127.0.0.1:1/v1", f"    {shaping}"))
    assert str(info.value).startswith(message), str(info.value)


async def test_a_continuation_is_shaped_like_any_request() -> None:
    async with recording_server({"status": 503, "body": {"error": {"message": "enough"}}}) as (url, received):
        providers = build_providers(config("vllm", url + "/v1"))
        params, _ = decode_chat_params({"model": "m", "messages": [{"role": "user", "content": "hi"}], "seed": 1})
        try:
            with pytest.raises(ServiceUnavailableError):
                async for _ in providers["b"].continue_stream("upstream-model", params, "Hel"):  # type: ignore[attr-defined]
                    pass
        finally:
            await providers["b"].close()
    body = received[0].body
    assert body["messages"][-1] == {"role": "assistant", "content": "Hel"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert (body["temperature"], body["max_tokens"], "seed" in body) == (0.2, 256, False), "shaped"
