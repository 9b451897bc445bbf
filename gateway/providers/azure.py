"""Azure OpenAI (`provider: azure`): OpenAI's API at deployment URLs, with an `api-version` and an `api-key` header.

Everything but the URL and the credentials header is the OpenAI-compatible adapter's. Shapes from the Azure OpenAI
REST reference, https://learn.microsoft.com/en-us/azure/ai-foundry/openai/reference (Chat completions, Embeddings:
`POST {endpoint}/openai/deployments/{deployment-id}/chat/completions?api-version=…`, `api-key` header or a Microsoft
Entra ID token as `Authorization: Bearer`). A target's `model` is the deployment name.

Options: `api_version` (default below, the latest GA version), `auth`: `api-key` (default) or `bearer` (the backend's
`api_key` is then an Entra ID access token; such tokens expire, so whatever refreshes it must reload the config).

The Responses API is served by Azure's v1 API only: `POST {endpoint}/openai/v1/responses` (no api-version, the
deployment name as the body's `model`), so that is where a Responses request goes, unchanged as for OpenAI
(https://learn.microsoft.com/en-us/azure/ai-foundry/openai/how-to/responses).
"""

from __future__ import annotations

from urllib.parse import quote

from gateway.config import BackendConfig, ConfigError
from gateway.providers import capabilities as cap
from gateway.providers.openai_compat import PATHS
from gateway.providers.openai_responses import OpenAIProvider

DEFAULT_API_VERSION = "2024-10-21"
_OPTIONS = frozenset(("api_version", "auth"))
_AUTH_MODES = ("api-key", "bearer")


class AzureOpenAIProvider(OpenAIProvider):
    """An Azure OpenAI resource; the model a target names is the deployment."""

    # Azure OpenAI serves completions, images and audio at deployments; it has no moderations or rerank endpoint.
    endpoints = frozenset((cap.COMPLETIONS, cap.IMAGES, cap.TRANSCRIPTIONS, cap.SPEECH))

    def __init__(self, backend: BackendConfig, path: str = "backend") -> None:
        options = dict(backend.options)
        if unknown := sorted(set(options) - _OPTIONS):
            raise ConfigError(f"{path}.options.{unknown[0]}: unknown option for the azure provider")
        version = options.get("api_version", DEFAULT_API_VERSION)
        if not isinstance(version, str) or not version:
            raise ConfigError(f"{path}.options.api_version: expected a version such as {DEFAULT_API_VERSION}")
        auth = options.get("auth", "api-key")
        if auth not in _AUTH_MODES:
            raise ConfigError(f"{path}.options.auth: expected api-key or bearer, got {auth!r}")
        if not backend.base_url:
            raise ConfigError(f"{path}.base_url: required for provider 'azure' (https://<resource>.openai.azure.com)")
        if backend.api_key is None:
            raise ConfigError(f"{path}.api_key: required for provider 'azure'")
        secret = backend.api_key.reveal()
        headers = {"api-key": secret} if auth == "api-key" else {"Authorization": f"Bearer {secret}"}
        super().__init__(backend, headers, responses_url=f"{backend.base_url}/openai/v1/responses")
        self._deployments = f"{backend.base_url}/openai/deployments"
        self._query = f"?api-version={quote(version, safe='')}"
        self._probe_url = f"{backend.base_url}/openai/models{self._query}"

    def _url(self, operation: str, model: str) -> str:
        return f"{self._deployments}/{quote(model, safe='')}/{PATHS[operation]}{self._query}"
