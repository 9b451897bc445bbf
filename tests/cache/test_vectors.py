"""The vector index: nearest by cosine within a partition, the threshold, the ring's bound, bad vectors refused."""

from __future__ import annotations

import numpy as np

from gateway.cache.keys import model_fingerprint
from gateway.cache.semantic import conversation_text, partition_of
from gateway.cache.vectors import VectorIndex
from gateway.config import ModelConfig, TargetConfig
from tollgate.gateway.v1 import gateway_pb2 as pb


def test_the_nearest_row_of_the_partition_above_the_threshold() -> None:
    index = VectorIndex(10)
    index.add("p", [1.0, 0.0, 0.0], "east")
    index.add("p", [0.0, 1.0, 0.0], "north")
    index.add("q", [0.8, 0.6, 0.0], "other-partition")
    found = index.nearest("p", [0.9, 0.1, 0.0], 0.9)
    assert found is not None and found[0] == "east" and 0.99 < found[1] <= 1.0
    assert index.nearest("p", [0.6, 0.8, 0.0], 0.9) is None  # the best in p is 0.8 alike: below the threshold
    found = index.nearest("q", [0.6, 0.8, 0.0], 0.9)
    assert found is not None and found[0] == "other-partition"
    assert index.nearest("unknown", [1.0, 0.0, 0.0], 0.0) is None


def test_the_oldest_rows_go_past_the_capacity() -> None:
    index = VectorIndex(100)
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(250, 16))
    for i, vector in enumerate(vectors):
        assert index.add("p", vector, f"k{i}")
    assert len(index) == 100
    assert index.nearest("p", vectors[0], 0.999) is None  # overwritten
    newest = index.nearest("p", vectors[249], 0.999)
    assert newest is not None and newest[0] == "k249"
    assert index.nearest("p", vectors[150], 0.999) is not None


def test_bad_vectors_are_refused() -> None:
    index = VectorIndex(10)
    assert index.add("p", [1.0, 2.0], "a")
    assert not index.add("p", [1.0, 2.0], "a")  # already held
    assert not index.add("p", [1.0, 2.0, 3.0], "b")  # another size
    assert not index.add("p", [0.0, 0.0], "c")  # no direction
    assert not index.add("p", [float("nan"), 1.0], "d")
    assert index.nearest("p", [1.0, 2.0, 3.0], 0.0) is None


MODEL = model_fingerprint(ModelConfig("m", (TargetConfig("b", "m"),)))


def params(text: str, **fields: float) -> pb.ChatCompletionParams:
    made = pb.ChatCompletionParams(model="m", temperature=0, **fields)  # type: ignore[arg-type]
    made.messages.add(role=pb.ROLE_SYSTEM, content="Be brief.")
    made.messages.add(role=pb.ROLE_USER, content=text)
    return made


def test_the_whole_conversation_is_embedded_and_everything_else_partitions() -> None:
    assert conversation_text(params("Hi")) == "ROLE_SYSTEM: Be brief.\nROLE_USER: Hi"
    base = partition_of("team:ml", MODEL, params("Hi"))
    assert partition_of("team:ml", MODEL, params("Something else entirely")) == base
    assert partition_of("team:ops", MODEL, params("Hi")) != base
    assert partition_of("team:ml", MODEL, params("Hi", top_p=0.5)) != base
    other_user = params("Hi")
    other_user.user = "someone"
    assert partition_of("team:ml", MODEL, other_user) == base


def _with_image(url: str) -> pb.ChatCompletionParams:
    made = pb.ChatCompletionParams(model="m", temperature=0)
    message = made.messages.add(role=pb.ROLE_USER)
    message.content_parts.add(text="What is in this picture?")
    message.content_parts.add().image_url.url = url
    return made


def test_what_is_not_text_partitions() -> None:
    # Only text is embedded: the same question about two different images must never match.
    cat, dog = _with_image("https://example.com/cat.png"), _with_image("https://example.com/dog.png")
    assert conversation_text(cat) == conversation_text(dog)
    assert partition_of("team:ml", MODEL, cat) != partition_of("team:ml", MODEL, dog)
    # Nor the same words after tool calls with other arguments.
    calls = []
    for city in ("Paris", "Oslo"):
        made = params("Thanks.")
        call = made.messages.add(role=pb.ROLE_ASSISTANT).tool_calls.add(id="call_1", type="function")
        call.function.name, call.function.arguments = "weather", f'{{"city": "{city}"}}'
        calls.append(partition_of("team:ml", MODEL, made))
    assert calls[0] != calls[1]
    # The text itself still only moves the embedding, not the partition.
    other_text = _with_image("https://example.com/cat.png")
    other_text.messages[0].content_parts[0].text = "Describe this image."
    assert partition_of("team:ml", MODEL, other_text) == partition_of("team:ml", MODEL, cat)
