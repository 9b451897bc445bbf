"""`json_body`: a provider request body is the JSON of the request, held at its own size for as long as the call
lives (orjson's own bytes keep the larger buffer they were written into)."""

from __future__ import annotations

import tracemalloc

import orjson
import pytest

from gateway.providers.http import json_body

PROMPT = "Summarise this document. " * 4000  # ≈ 100 KB: a long context, as agents and RAG send


@pytest.mark.parametrize(
    "value",
    [
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        {"model": "m", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 16},
        {"text": 'é ✓ \u2028 "quoted" \\ \n', "n": [1, 2.5, None, True]},
    ],
    ids=["short", "long prompt", "escapes"],
)
def test_a_body_is_the_requests_json(value: object) -> None:
    assert json_body(value) == orjson.dumps(value)
    assert orjson.loads(json_body(value)) == value


@pytest.mark.parametrize("prompt", ["hi", PROMPT], ids=["short", "long prompt"])
def test_a_body_held_for_a_stream_costs_its_own_size(prompt: str) -> None:
    request = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        body = json_body(request)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held <= len(body) + 256  # the bytes object's header, nothing more
