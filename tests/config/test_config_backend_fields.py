"""A backend's URL and headers are refused at load when a call could not use them: a port out of range or no host
(the URL raised at the first call), a header name that is not a token or a value with a line break or NUL (it would
split the request on the wire)."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config

BACKEND = '{name: local, provider: openai, base_url: "http://127.0.0.1:8000/v1"%s}'
MODELS = "\nmodels:\n  - {name: small, targets: [{backend: local, model: m}]}\n"


def config(backend: str) -> str:
    return f"backends:\n  - {backend}{MODELS}"


BAD = [
    pytest.param(
        config(BACKEND.replace("8000", "99999") % ""),
        "backends[0].base_url: not a usable URL (Port out of range 0-65535): 'http://127.0.0.1:99999/v1'",
        id="port-out-of-range",
    ),
    pytest.param(
        config(BACKEND.replace("127.0.0.1", "") % ""),
        "backends[0].base_url: expected a host (and a port from 1 to 65535), got 'http://:8000/v1'",
        id="no-host",
    ),
    pytest.param(
        config(BACKEND % ', headers: {"x tenant": a}'),
        "backends[0].headers: 'x tenant' is not a header name",
        id="header-name-not-a-token",
    ),
    pytest.param(
        config(BACKEND % ', headers: {x-tenant: "a\\r\\nx-admin: 1"}'),
        "backends[0].headers.x-tenant: a line break or NUL cannot be sent in a header",
        id="header-value-line-break",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_a_backend_a_call_could_not_use_is_refused_with_its_path(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, {})
    assert str(caught.value) == message


def test_usual_urls_and_headers_load() -> None:
    text = config(BACKEND.replace("http://127.0.0.1:8000", "https://api.example.com") % ', headers: {X-Tenant: "a b"}')
    backend = parse_config(text, {}).backend("local")
    assert backend.base_url == "https://api.example.com/v1"
    assert dict(backend.headers) == {"X-Tenant": "a b"}
