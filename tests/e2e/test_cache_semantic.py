"""The semantic cache through the whole gateway, in both modes: prompts worded alike (above the threshold) share an
answer, others (below it) do not; other sampling parameters never match; replicas share vectors through Redis; an
embedding failure is a miss, never a failed request.

The fake upstream's word embeddings (feature hashing of the words) make similarity predictable: cosine = shared
words / sqrt(words of one * words of the other), the role tag `ROLE_USER` counting as a word of each prompt.
"""

from __future__ import annotations

from typing import Any

import openai

from gateway.testing.fake_openai import FakeOpenAI, Fault
from tests.conftest import StartGateway
from tests.e2e.test_cache import _stored_in, cached, sdk, upstream_chats

SEMANTIC = "{ttl: 10m, semantic: {embedding_model: text-embedding-3-small, threshold: 0.85}}"


def user(text: str) -> Any:
    return [{"role": "user", "content": text}]


async def ask(client: openai.AsyncOpenAI, text: str, **kwargs: Any) -> tuple[str, str]:
    options: dict[str, Any] = {"model": "gpt-4o-mini", "messages": user(text), "temperature": 0, **kwargs}
    raw = await client.chat.completions.with_raw_response.create(**options)
    return raw.parse().choices[0].message.content or "", raw.headers["x-tollgate-cache"]


def embeddings(upstream: FakeOpenAI) -> int:
    return sum(1 for r in upstream.requests if r.path == "/v1/embeddings")


async def test_alike_prompts_hit_and_others_miss(start_gateway: StartGateway, upstream: FakeOpenAI) -> None:
    upstream.word_embeddings = True
    client = sdk(await start_gateway(cached(upstream, SEMANTIC)))
    answer, status = await ask(client, "What is the capital of France?")
    assert status == "miss"
    # The same words (case and punctuation aside): similarity 1.
    assert await ask(client, "what is the capital of france") == (answer, "hit")
    # 8 of 9 words shared: 8 / sqrt(8 * 9) = 0.94, above 0.85.
    assert await ask(client, "What is the capital of France, please?") == (answer, "hit")
    # 6 of 8 shared: 6 / sqrt(8 * 8) = 0.75, below.
    _, status = await ask(client, "What is the capital of Italy then?")
    assert status == "miss"
    _, status = await ask(client, "Tell me a joke about cats.")
    assert status == "miss"
    assert upstream_chats(upstream) == 3
    # An exact repeat is found by its key, before any embedding is made.
    before = embeddings(upstream)
    assert await ask(client, "What is the capital of France?") == (answer, "hit")
    assert embeddings(upstream) == before


async def test_other_parameters_never_match(start_gateway: StartGateway, upstream: FakeOpenAI) -> None:
    upstream.word_embeddings = True
    client = sdk(await start_gateway(cached(upstream, SEMANTIC)))
    await ask(client, "What is the capital of France?")
    _, status = await ask(client, "what is the capital of france", max_tokens=5)
    assert status == "miss"
    assert upstream_chats(upstream) == 2


async def test_an_embedding_failure_is_a_miss(start_gateway: StartGateway, upstream: FakeOpenAI) -> None:
    upstream.word_embeddings = True
    client = sdk(await start_gateway(cached(upstream, SEMANTIC)))
    upstream.add_fault(Fault(status=400, error_type="invalid_request_error", path="/v1/embeddings"))
    answer, status = await ask(client, "What is the capital of France?")
    assert status == "miss" and answer
    # Stored under its exact key still; only its vector is missing.
    assert await ask(client, "What is the capital of France?") == (answer, "hit")


async def test_replicas_share_vectors_through_redis(
    start_gateway: StartGateway, upstream: FakeOpenAI, redis_url: str, redis_namespace: str
) -> None:
    upstream.word_embeddings = True
    shared = f"redis: {redis_url}\ncache: {{redis: true, key_prefix: {redis_namespace}}}"
    one = sdk(await start_gateway(cached(upstream, SEMANTIC, extra=shared)))
    two = sdk(await start_gateway(cached(upstream, SEMANTIC, extra=shared)))
    answer, _ = await ask(one, "What is the capital of France?")
    await _stored_in(redis_url, redis_namespace, 2)  # the answer and the stream of vectors
    assert await ask(two, "what is the capital of france, please") == (answer, "hit")
    assert upstream_chats(upstream) == 1
