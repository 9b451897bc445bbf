"""Every HTTP provider's active-health probe asks for the provider's own model list, with its own credentials, and a
bad answer is a `GatewayError`; request shaping leaves the probe alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import MappingProxyType

import pytest
from aiohttp import web

from gateway.config import BackendConfig, Secret
from gateway.config.shaping import RequestShaping
from gateway.errors import GatewayError, UpstreamCredentialsError
from gateway.providers.base import Probeable
from gateway.providers.mock import MockProvider
from gateway.providers.registry import PROVIDERS
from gateway.providers.shaping import with_shaping
from tests.providers.serving import served


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.status = 200
        self.base_url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, request.path_qs, dict(request.headers)))
        if self.status != 200:
            body = {"error": {"type": "authentication_error", "message": "bad key", "code": "invalid_api_key"}}
            return web.json_response(body, status=self.status)
        return web.json_response({"data": [], "models": []})


@pytest.fixture
async def upstream() -> AsyncIterator[Recorder]:
    recorder = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    async with served(app) as port:
        recorder.base_url = f"http://127.0.0.1:{port}"
        yield recorder


# provider type, base_url suffix, the request the probe must make, the credential header it must carry
CASES = [
    ("openai", "/v1", "/v1/models", ("Authorization", "Bearer sk-test")),
    ("vllm", "/v1", "/v1/models", ("Authorization", "Bearer sk-test")),
    ("azure", "", "/openai/models?api-version=2024-10-21", ("api-key", "sk-test")),
    ("gemini", "/v1beta", "/v1beta/models?pageSize=1", ("x-goog-api-key", "sk-test")),
    ("anthropic", "", "/v1/models?limit=1", ("x-api-key", "sk-test")),
]


def backend(kind: str, base_url: str, **fields: object) -> BackendConfig:
    options = MappingProxyType({"api_version": "2024-10-21"} if kind == "azure" else {})
    return BackendConfig(
        name="b", provider=kind, base_url=base_url, api_key=Secret("sk-test"), options=options, **fields
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(("kind", "suffix", "path", "credential"), CASES)
async def test_the_probe_lists_models_with_the_provider_credentials(
    upstream: Recorder, kind: str, suffix: str, path: str, credential: tuple[str, str]
) -> None:
    provider = PROVIDERS[kind](backend(kind, upstream.base_url + suffix), "backends[0]")
    assert isinstance(provider, Probeable)
    try:
        await provider.probe()
        upstream.status = 401
        with pytest.raises(GatewayError) as failed:
            await provider.probe()
    finally:
        await provider.close()
    assert [(method, path_qs) for method, path_qs, _ in upstream.seen] == [("GET", path), ("GET", path)]
    name, value = credential
    assert upstream.seen[0][2][name] == value
    assert isinstance(failed.value, UpstreamCredentialsError)  # the backend refused our key: a 502, not a 401


async def test_shaping_keeps_the_probe_and_a_provider_without_one_stays_without(upstream: Recorder) -> None:
    shaping = RequestShaping(defaults=MappingProxyType({"temperature": 0.2}))
    shaped = with_shaping(PROVIDERS["openai"](backend("openai", upstream.base_url + "/v1", shaping=shaping), "b"))
    try:
        assert isinstance(shaped, Probeable)
        await shaped.probe()
    finally:
        await shaped.close()
    assert upstream.seen[0][1] == "/v1/models"
    mock = BackendConfig(name="m", provider="mock", shaping=shaping)
    assert not isinstance(with_shaping(MockProvider(mock, "m")), Probeable)
