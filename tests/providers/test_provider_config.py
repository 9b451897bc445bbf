"""Backend settings the Gemini and Azure adapters refuse, each named by its field's path."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config
from gateway.providers.registry import build_providers


def build(backend: str) -> None:
    text = f"""
auth: none
backends:
  - {backend}
models:
  - {{name: m, targets: [{{backend: b, model: m}}]}}
"""
    build_providers(parse_config(text, {}))


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        ("{name: b, provider: gemini}", "backends[name=b].api_key: required for provider 'gemini'"),
        ("{name: b, provider: gemini, api_key: k, options: {region: x}}", "backends[name=b].options.region: unknown"),
        ("{name: b, provider: azure, api_key: k}", "backends[name=b].base_url: required for provider 'azure'"),
        ("{name: b, provider: azure, base_url: 'https://r.openai.azure.com'}", "backends[name=b].api_key: required"),
        (
            "{name: b, provider: azure, api_key: k, base_url: 'https://r.openai.azure.com', options: {auth: basic}}",
            "backends[name=b].options.auth: expected api-key or bearer, got 'basic'",
        ),
        (
            "{name: b, provider: azure, api_key: k, base_url: 'https://r.openai.azure.com', options: {api_version: 3}}",
            "backends[name=b].options.api_version: expected a version",
        ),
        (
            "{name: b, provider: azure, api_key: k, base_url: 'https://r.openai.azure.com', options: {deployment: x}}",
            "backends[name=b].options.deployment: unknown option for the azure provider",
        ),
    ],
)
def test_bad_backend_is_refused_with_its_path(backend: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(backend)
    assert str(info.value).startswith(message)


def test_good_backends_build() -> None:
    build("{name: b, provider: gemini, api_key: k}")
    build("{name: b, provider: azure, api_key: k, base_url: 'https://r.openai.azure.com', options: {auth: bearer}}")
