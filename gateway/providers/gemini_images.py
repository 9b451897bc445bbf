"""Image generation on the Gemini API: Imagen models through `models/{model}:predict`, as
https://ai.google.dev/gemini-api/docs/imagen documents it (REST: `{"instances": [{"prompt"}], "parameters":
{"sampleCount", "aspectRatio", …}}` → `{"predictions": [{"bytesBase64Encoded", "mimeType"}]}`).

What is lost or refused: Imagen answers image data only, so a request that asks for `response_format: url` is a 400
(without it the images come as `b64_json`, as gpt-image models' do); `size` maps to the aspect ratios Imagen has
(1:1, 3:4, 4:3, 9:16, 16:9), and any other size is a 400 naming it; `quality` and `style` have no Imagen equivalent
and are refused likewise; request fields beyond OpenAI's (`personGeneration`, `imageSize`…) go into `parameters`.
Gemini's `…-image` chat models answer images through generateContent and are not mapped here.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import InvalidRequestError
from tollgate.gateway.v1 import endpoints_pb2 as ep

# OpenAI's sizes → Imagen's aspect ratios (1536x1024 is 3:2, which Imagen lacks: its nearest, 4:3).
_ASPECT = {
    "1024x1024": "1:1",
    "256x256": "1:1",
    "512x512": "1:1",
    "1792x1024": "16:9",
    "1024x1792": "9:16",
    "1536x1024": "4:3",
    "1024x1536": "3:4",
}


def encode_imagen_request(request: ep.CreateImageRequest) -> dict[str, Any]:
    """The `:predict` body for an image request; a field Imagen cannot honour is a 400 naming it."""
    if request.HasField("response_format") and request.response_format != "b64_json":
        raise InvalidRequestError(
            "response_format: Imagen models answer image data only; ask for b64_json", param="response_format"
        )
    for name in ("quality", "style"):
        if request.HasField(name):
            raise InvalidRequestError(f"{name}: Imagen models have no {name} setting", param=name)
    parameters: dict[str, Any] = {"sampleCount": request.n if request.HasField("n") else 1}
    if request.HasField("size") and request.size != "auto":
        aspect = _ASPECT.get(request.size)
        if aspect is None:
            sizes = ", ".join(_ASPECT)
            raise InvalidRequestError(f"size: Imagen models take {sizes} or auto, got {request.size!r}", param="size")
        parameters["aspectRatio"] = aspect
    if request.extra_json:
        parameters.update(orjson.loads(request.extra_json))
    return {"instances": [{"prompt": request.prompt}], "parameters": parameters}


def decode_imagen(raw: dict[str, Any], created: int) -> ep.CreateImageResponse:
    """The images of a `:predict` answer, as b64_json (an image filtered out by Imagen's safety is absent)."""
    out = ep.CreateImageResponse(created=created)
    for prediction in raw.get("predictions") or ():
        out.data.add(b64_json=str(prediction["bytesBase64Encoded"]))
    return out
