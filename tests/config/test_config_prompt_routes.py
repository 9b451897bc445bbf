"""The configuration of route rules that read the prompt: the issue's own example reads as written, and every bad
field is named."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config

MODELS = """
backends: [{name: m, provider: mock}]
models:
  - {name: chat, targets: [{backend: m}]}
  - {name: coder, targets: [{backend: m}]}
  - {name: writer, targets: [{backend: m}]}
  - {name: embed, targets: [{backend: m}]}
  - {name: big, targets: [{backend: m}]}
  - {name: tool-model, targets: [{backend: m}]}
"""

ISSUE = """
routes:
  - name: by-topic
    match: {model: auto}
    semantic:
      embedding_model: embed          # a model of this file that serves embeddings
      threshold: 0.6
      choices:
        - {to: coder, examples: ["write a python function", "fix this python stack trace"]}
        - {to: writer, examples: ["write a poem about the sea"]}
      default: chat                   # no choice close enough; without `default` the next rule is tried
  - {name: long, to: big, match: {model: smart, prompt_tokens: {min: 2000}}}
  - {name: tooly, to: tool-model, match: {model: smart, features: [tools]}}
"""


def test_the_issue_configuration_reads() -> None:
    by_topic, long, tooly = parse_config(MODELS + ISSUE, {}).routing.routes
    assert by_topic.semantic is not None and by_topic.default == "chat" and by_topic.text == "last_user"
    assert [c.to for c in by_topic.semantic.choices] == ["coder", "writer"]
    assert by_topic.semantic.embedding_model == "embed" and by_topic.semantic.threshold == 0.6
    assert long.match.prompt_tokens == (2000, None) and long.to == "big"
    assert tooly.match.features == ("tools",)


def semantic(fields: str) -> str:
    return MODELS + f"routes: [{{name: r, match: {{model: auto}}, semantic: {fields}}}]\n"


CHOICES = "choices: [{to: coder, examples: [x]}]"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (semantic(f"{{embedding_model: embed, threshold: 1.5, {CHOICES}}}"), "routes[0].semantic.threshold: a cosine"),
        (semantic(f"{{embedding_model: nope, {CHOICES}}}"), "routes[0].semantic.embedding_model: unknown model"),
        (semantic("{embedding_model: embed, choices: []}"), "routes[0].semantic.choices: at least one choice"),
        (semantic("{embedding_model: embed, choices: [{to: nope, examples: [x]}]}"), "routes[0].semantic: unknown"),
        (semantic("{embedding_model: embed, choices: [{to: coder, examples: []}]}"), "routes[0].semantic.choices[0]"),
        (semantic("{embedding_model: embed, choices: [{to: coder, examples: [' ']}]}"), "routes[0].semantic.choices"),
        (semantic(f"{{embedding_model: embed, text: all, {CHOICES}}}"), "routes[0].semantic.text: expected one of"),
        (semantic(f"{{embedding_model: embed, default: nope, {CHOICES}}}"), "routes[0].semantic: unknown model"),
        (semantic(f"{{{CHOICES}}}"), "routes[0].semantic.embedding_model: required"),
        (MODELS + "routes: [{name: r, to: chat, semantic: {}}]", "routes[0]: a route has exactly one of"),
        (MODELS + "routes: [{name: r, match: {features: [video]}, to: chat}]", "routes[0].match.features[0]"),
        (MODELS + "routes: [{name: r, match: {prompt_tokens: {min: 5, max: 2}}, to: chat}]", "routes[0].match."),
        (MODELS + "routes: [{name: r, match: {prompt_tokens: {min: -1}}, to: chat}]", "routes[0].match.prompt_tokens"),
        (MODELS + "routes: [{name: r, classifier: {server: 'h:1'}}]", "routes[0].classifier.choices: required"),
        (MODELS + "routes: [{name: r, classifier: {server: nohost, choices: [chat]}}]", "routes[0].classifier.server"),
    ],
)
def test_bad_prompt_routes_name_the_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, {})
    assert str(caught.value).startswith(message), str(caught.value)


def test_choices_of_a_disabled_model_are_left_out() -> None:
    text = MODELS.replace(
        "backends: [{name: m, provider: mock}]",
        "backends: [{name: m, provider: mock}, {name: down, provider: mock, enabled: false}]",
    )
    text += "  - {name: gone, targets: [{backend: down}]}\n"
    text += "routes: [{name: r, semantic: {embedding_model: embed, choices: [{to: gone, examples: [x]}, "
    text += "{to: coder, examples: [y]}], default: gone}}]\n"
    (rule,) = parse_config(text, {}).routing.routes
    assert rule.semantic is not None and [c.to for c in rule.semantic.choices] == ["coder"]
    assert rule.default == ""
