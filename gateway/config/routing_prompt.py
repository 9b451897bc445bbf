"""Reading the route rules that read the prompt: `match.prompt_tokens`, `match.features`, and the deciding rules
(`semantic:`, `classifier:`) that pick a model from the prompt. Every problem names the path of the bad field."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway.config.fields import (
    ConfigError,
    _address,
    _list,
    _name,
    _Node,
    _positive_int,
    _positive_number,
    _str,
    parse_duration,
)
from gateway.config.routing import (
    PROMPT_FEATURES,
    PROMPT_TEXTS,
    ClassifierRoute,
    RouteMatch,
    RouteRule,
    SemanticChoice,
    SemanticRoute,
)

_SEMANTIC = SemanticRoute(embedding_model="", choices=())
_CLASSIFIER = ClassifierRoute(server="", choices=())


def _tokens(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{path}: expected a whole number of tokens ≥ 0, got {value!r}")
    return value


def prompt_tokens(node: _Node) -> tuple[int, int | None]:
    """`prompt_tokens: {min, max}`, both optional and inclusive."""
    low = node.get("min", _tokens, 0)
    high = node.get("max", _tokens, None)
    node.done()
    if high is not None and high < low:
        raise ConfigError(f"{node.at('max')}: must be at least min ({low})")
    return low, high


def features(value: Any, path: str) -> tuple[str, ...]:
    """`features: [tools, images, audio, json_schema]`: the request must use every one listed."""
    raw = [value] if isinstance(value, str) else _list(value, path)
    for i, name in enumerate(raw):
        if name not in PROMPT_FEATURES:
            raise ConfigError(f"{path}[{i}]: expected one of {', '.join(PROMPT_FEATURES)}, got {name!r}")
    return tuple(dict.fromkeys(raw))


def _threshold(value: Any, path: str) -> float:
    number = _positive_number(value, path)
    if number > 1:
        raise ConfigError(f"{path}: a cosine similarity is at most 1, got {value!r}")
    return number


def _text(node: _Node) -> str:
    text = node.get("text", _str, "last_user")
    if text not in PROMPT_TEXTS:
        raise ConfigError(f"{node.at('text')}: expected one of {', '.join(PROMPT_TEXTS)}, got {text!r}")
    return text


def _examples(value: Any, path: str) -> tuple[str, ...]:
    raw = _list(value, path)
    if not raw:
        raise ConfigError(f"{path}: at least one example is required")
    out = tuple(_str(example, f"{path}[{i}]") for i, example in enumerate(raw))
    for i, example in enumerate(out):
        if not example.strip():
            raise ConfigError(f"{path}[{i}]: an example must not be blank")
    return out


def _choice(node: _Node) -> SemanticChoice:
    choice = SemanticChoice(to=node.require("to", _name), examples=node.require("examples", _examples))
    node.done()
    return choice


def _semantic(node: _Node) -> SemanticRoute:
    raw: list[Any] = node.require("choices", _list)
    if not raw:
        raise ConfigError(f"{node.at('choices')}: at least one choice is required")
    return SemanticRoute(
        embedding_model=node.require("embedding_model", _name),
        choices=tuple(_choice(_Node(c, f"{node.at('choices')}[{i}]")) for i, c in enumerate(raw)),
        threshold=node.get("threshold", _threshold, _SEMANTIC.threshold),
        timeout=node.get("timeout", parse_duration, _SEMANTIC.timeout),
        batch=node.get("batch", _positive_int, _SEMANTIC.batch),
    )


def _classifier(node: _Node) -> ClassifierRoute:
    raw: list[Any] = node.require("choices", _list)
    if not raw:
        raise ConfigError(f"{node.at('choices')}: at least one choice is required")
    return ClassifierRoute(
        server=node.require("server", _address),
        choices=tuple(_name(c, f"{node.at('choices')}[{i}]") for i, c in enumerate(raw)),
        timeout=node.get("timeout", parse_duration, _CLASSIFIER.timeout),
    )


def deciding_rule(name: str, match: RouteMatch, semantic: _Node | None, classifier: _Node | None) -> RouteRule:
    """A rule with `semantic:` or `classifier:` (each with its `default` and `text`)."""
    node = semantic if semantic is not None else classifier
    assert node is not None
    default = node.get("default", _name, "")
    text = _text(node)
    if semantic is not None:
        rule = RouteRule(name=name, match=match, semantic=_semantic(semantic), default=default, text=text)
    else:
        rule = RouteRule(name=name, match=match, classifier=_classifier(node), default=default, text=text)
    node.done()
    return rule


def deciding_models(rule: RouteRule, path: str, served: set[str], declared: list[Any]) -> list[RouteRule]:
    """The rule as served: each model it names must be declared; choices of models left out with their disabled
    backends are left out too (and a default to one), and so is a rule with nothing left to pick."""
    section = "semantic" if rule.semantic is not None else "classifier"
    for model in rule.models():
        if model not in served and model not in declared:
            raise ConfigError(f"{path}.{section}: unknown model {model!r}")
    default = rule.default if rule.default in served else ""
    if rule.semantic is not None:
        embedder = rule.semantic.embedding_model
        if embedder not in served:
            raise ConfigError(f"{path}.semantic.embedding_model: unknown model {embedder!r}")
        choices = tuple(c for c in rule.semantic.choices if c.to in served)
        if not choices:
            return []
        return [replace(rule, semantic=replace(rule.semantic, choices=choices), default=default)]
    assert rule.classifier is not None
    picks = tuple(c for c in rule.classifier.choices if c in served)
    if not picks:
        return []
    return [replace(rule, classifier=replace(rule.classifier, choices=picks), default=default)]
