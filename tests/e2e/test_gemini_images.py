"""Images from Gemini's Imagen models (`models/{model}:predict`) through `POST /v1/images/generations`, with the
official openai SDK, in both modes: base64 images, sizes as aspect ratios, extra fields as Imagen parameters, what
Imagen cannot do refused by name, upstream errors mapped as for chat."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest

from gateway.testing.fake_gemini import PNG_1X1, FakeGemini
from tests.conftest import RunningGateway, StartGateway

KEY = "gemini-upstream-key"


@pytest.fixture
async def gemini() -> AsyncIterator[FakeGemini]:
    async with FakeGemini(api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def gateway(start_gateway: StartGateway, gemini: FakeGemini) -> RunningGateway:
    return await start_gateway(f"""
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0"}}
auth: none
backends:
  - {{name: google, provider: gemini, base_url: "{gemini.base_url}", api_key: {KEY}}}
models:
  - {{name: imagen, targets: [{{backend: google, model: imagen-4.0-generate-001}}]}}
  - {{name: flash, targets: [{{backend: google, model: gemini-2.0-flash}}]}}
""")


def client(gateway: RunningGateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0, timeout=10)


async def test_imagen_images(gateway: RunningGateway, gemini: FakeGemini) -> None:
    images = await client(gateway).images.generate(model="imagen", prompt="a red fox", n=2, size="1792x1024")
    assert [image.b64_json for image in images.data or ()] == [PNG_1X1, PNG_1X1]
    assert images.created > 0
    sent = gemini.requests[-1]
    assert sent.path == "/v1beta/models/imagen-4.0-generate-001:predict"
    assert sent.headers["x-goog-api-key"] == KEY
    assert sent.body == {
        "instances": [{"prompt": "a red fox"}],
        "parameters": {"sampleCount": 2, "aspectRatio": "16:9"},
    }
    await client(gateway).images.generate(model="imagen", prompt="x", extra_body={"personGeneration": "dont_allow"})
    assert gemini.requests[-1].body["parameters"] == {"sampleCount": 1, "personGeneration": "dont_allow"}


async def test_what_imagen_cannot_do_is_refused_by_name(gateway: RunningGateway) -> None:
    for kwargs, param in (({"response_format": "url"}, "response_format"), ({"size": "640x480"}, "size"),
                          ({"quality": "hd"}, "quality")):  # fmt: skip
        with pytest.raises(openai.BadRequestError) as caught:
            await client(gateway).images.generate(model="imagen", prompt="x", **kwargs)  # type: ignore[arg-type]
        assert isinstance(caught.value.body, dict) and caught.value.body["param"] == param
    with pytest.raises(openai.BadRequestError) as caught:
        await client(gateway).completions.create(model="flash", prompt="hi")
    assert caught.value.code == "unsupported_endpoint"


async def test_upstream_errors_keep_their_meaning(gateway: RunningGateway, gemini: FakeGemini) -> None:
    gemini.fail_next.append(429)
    with pytest.raises(openai.RateLimitError):
        await client(gateway).images.generate(model="imagen", prompt="x")
