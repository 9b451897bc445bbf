"""The nearest-example index (each choice's best example, the threshold, the allowed choices) and what rules read of
a prompt (its text, its features)."""

from __future__ import annotations

import pytest

from gateway.routing.nearest import ExampleIndex
from gateway.routing.prompt import prompt_text, uses
from tollgate.gateway.v1 import gateway_pb2 as pb


def test_a_choice_scores_its_best_example() -> None:
    index = ExampleIndex(["a", "b"], [[[1, 0, 0], [0, 1, 0]], [[0, 0, 1]]])
    assert index.scores([0, 2, 0]) == pytest.approx([1.0, 0.0])
    assert index.best([0.1, 1, 0.9], 0.6) == ("a", pytest.approx(0.74, abs=0.01))
    assert index.best([0.1, 1, 0.9], 0.8)[0] == ""  # below the threshold
    assert index.best([0, 0.9, 1], 0.6, allowed=("a",)) == ("a", pytest.approx(0.67, abs=0.01))
    assert index.scores([0, 0, 0]) == [0.0, 0.0]
    with pytest.raises(ValueError, match="3 dimensions"):
        index.scores([1, 0])
    with pytest.raises(ValueError):
        ExampleIndex(["a"], [[]])


def message(role: pb.Role.ValueType, text: str = "", **fields: object) -> pb.ChatMessage:
    return pb.ChatMessage(role=role, content=text, **fields)  # type: ignore[arg-type]


def test_the_text_read() -> None:
    params = pb.ChatCompletionParams(
        messages=[
            message(pb.ROLE_SYSTEM, "be brief"),
            message(pb.ROLE_USER, "first question"),
            message(pb.ROLE_ASSISTANT, "an answer"),
            message(pb.ROLE_USER, content_parts=[pb.ContentPart(text="second"), pb.ContentPart(text="question")]),
        ]
    )
    assert prompt_text(params, "last_user") == "second\nquestion"
    assert prompt_text(params, "conversation") == "be brief\nfirst question\nan answer\nsecond\nquestion"
    assert prompt_text(pb.ChatCompletionParams(messages=[message(pb.ROLE_SYSTEM, "x")]), "last_user") == ""


def test_the_features() -> None:
    plain = pb.ChatCompletionParams(messages=[message(pb.ROLE_USER, "hi")])
    assert not any(uses(plain, f) for f in ("tools", "images", "audio", "json_schema"))
    image = pb.ContentPart(image_url=pb.ImageUrl(url="data:image/png;base64,AA=="))
    audio = pb.ContentPart(input_audio=pb.InputAudio(data="AA==", format="wav"))
    rich = pb.ChatCompletionParams(
        messages=[message(pb.ROLE_USER, content_parts=[image, audio])],
        tools=[pb.Tool(type="function", function=pb.FunctionDefinition(name="f"))],
        response_format=pb.ResponseFormat(type="json_schema"),
    )
    assert all(uses(rich, f) for f in ("tools", "images", "audio", "json_schema"))
    assert uses(pb.ChatCompletionParams(modalities=["text", "audio"]), "audio")
