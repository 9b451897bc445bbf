"""Provider types by name: the one place a backend's `provider:` becomes an adapter."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType

from gateway.config import BackendConfig, ConfigError, GatewayConfig
from gateway.providers.anthropic import build_anthropic
from gateway.providers.azure import AzureOpenAIProvider
from gateway.providers.base import Provider
from gateway.providers.gemini import GeminiProvider
from gateway.providers.mock import MockProvider
from gateway.providers.openai_compat import OpenAICompatibleProvider
from gateway.providers.openai_responses import OpenAIProvider
from gateway.providers.shaping import with_shaping
from gateway.providers.wake import fleet_lock, with_wake

Factory = Callable[[BackendConfig, str], Provider]


def _openai_compatible(backend: BackendConfig, path: str) -> Provider:
    if backend.provider != "openai" and not backend.base_url:
        raise ConfigError(f"{path}.base_url: required for provider '{backend.provider}'")
    # OpenAI itself also serves the Responses API; the compatible servers get Responses requests as chat.
    return OpenAIProvider(backend) if backend.provider == "openai" else OpenAICompatibleProvider(backend)


PROVIDERS: dict[str, Factory] = {
    "mock": MockProvider,
    "gemini": GeminiProvider,
    "azure": AzureOpenAIProvider,
    "anthropic": build_anthropic,
    # The OpenAI-compatible family: one adapter, named after what operators call their servers.
    "openai": _openai_compatible,
    "openai-compatible": _openai_compatible,
    "vllm": _openai_compatible,
    "ollama": _openai_compatible,
    "groq": _openai_compatible,
    "mistral": _openai_compatible,
    "together": _openai_compatible,
}

# How each provider type can continue an answer from a prefix of it (mid-stream failover), its default first:
# "prefill" a trailing assistant message (Anthropic; the mock), "vllm" the same with vLLM's
# `continue_final_message`, "prefix" with Mistral's and DeepSeek's `"prefix": true`, "none" not at all.
_OPENAI_CONTINUES = ("none", "vllm", "prefix")
CONTINUATIONS: dict[str, tuple[str, ...]] = {
    "mock": ("prefill", "none"),
    "anthropic": ("prefill", "none"),
    "vllm": ("vllm", "none", "prefix"),
    "mistral": ("prefix", "none"),
    "openai": ("none",),  # OpenAI's API starts a new turn after a trailing assistant message
    "azure": ("none",),
    "gemini": ("none",),
}


def _continuation(backend: BackendConfig, path: str) -> BackendConfig:
    """`backend` with its `continuation` resolved: its provider type's default, or the configured one if the type
    supports it."""
    known = CONTINUATIONS.get(backend.provider, _OPENAI_CONTINUES)
    if not backend.continuation:
        return replace(backend, continuation=known[0])
    if backend.continuation not in known:
        raise ConfigError(
            f"{path}.continue: provider '{backend.provider}' cannot continue with {backend.continuation!r} "
            f"(it takes: {', '.join(known)})"
        )
    return backend


def build_providers(config: GatewayConfig, kept: Mapping[str, Provider] = MappingProxyType({})) -> dict[str, Provider]:
    """One adapter per enabled backend, shaping requests where its backend says so and waking it on demand where it
    has `wake:`; an unknown type or bad option is a `ConfigError` naming the field. The backends in `kept` (a
    reload's unchanged ones) keep the adapter they have, with its connection pool."""
    providers: dict[str, Provider] = {}
    lock = fleet_lock(config) if any(b.name not in kept for b in config.backends) else None
    for backend in config.backends:
        if backend.name in kept:
            providers[backend.name] = kept[backend.name]
            continue
        path = f"backends[name={backend.name}]"
        factory = PROVIDERS.get(backend.provider)
        if factory is None:
            known = ", ".join(sorted(PROVIDERS))
            raise ConfigError(f"{path}.provider: unknown provider {backend.provider!r} (known: {known})")
        if backend.wake is not None and not backend.base_url:
            raise ConfigError(f"{path}.wake: needs the backend's base_url (its ready_path is polled there)")
        resolved = _continuation(backend, path)
        providers[backend.name] = with_wake(with_shaping(factory(resolved, path)), lock)
    return providers
