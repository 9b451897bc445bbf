"""The Grafana dashboard in the repo asks only for metrics (and labels) the gateway exports."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson

from gateway.assemble import assemble
from gateway.config import parse_config
from gateway.telemetry.frontdoor import watch_connections

DASHBOARD = Path(__file__).parents[2] / "dashboards" / "grafana" / "tollgate.json"
# Every section that brings scrape-time metrics: auth, stats, a Redis limiter (nothing is connected to), a cache.
CONFIG = """
auth: {server: "127.0.0.1:1"}
stats: {server: "127.0.0.1:1", spool_dir: "/nonexistent"}
redis: redis://127.0.0.1:1/0
limits: {backend: redis}
cache: {redis: true}
backends: [{name: demo, provider: mock}]
models:
  - {name: demo, targets: [{backend: demo}], cache: {ttl: 1m, semantic: {embedding_model: demo}}}
"""
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
_SELECTOR = re.compile(r"\b((?:gen_ai|tollgate)_[a-z0-9_]+)(\{[^}]*\})?")
_MATCHER = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)")


def exported() -> dict[str, set[str]]:
    """Sample name → label names, for every metric a fully configured engine exports."""
    assembly = assemble(parse_config(CONFIG, {}))
    assert assembly.telemetry.metrics is not None
    watch_connections(assembly.telemetry, {"max_connections": 0})  # what the front door adds to the same metrics
    metrics = assembly.telemetry.metrics
    names: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        labels = _labels(metrics, family.name)
        for suffix in _SUFFIXES[family.type]:
            names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


def _labels(metrics: Any, name: str) -> set[str]:
    for attribute in [*vars(metrics).values(), *vars(metrics.routing).values()]:
        if getattr(attribute, "_name", None) == name:
            return set(attribute._labelnames)  # the instrument's declared label names
    for source in metrics.sources._metrics:
        if source.name == name:
            return set(source.labels)
    raise AssertionError(f"no instrument named {name}")


def expressions() -> list[str]:
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_every_expression_names_exported_metrics_and_labels() -> None:
    names = exported()
    seen: set[str] = set()
    for expr in expressions():
        selectors = _SELECTOR.findall(re.sub(r"by \([^)]*\)", "", expr))
        assert selectors, expr
        for name, matchers in selectors:
            assert name in names, f"{name} in {expr!r} is not exported"
            seen.add(name)
            for label in _MATCHER.findall(matchers):
                assert label in names[name], f"{name} has no label {label} ({expr!r})"
        for group in re.findall(r"by \(([^)]*)\)", expr):
            for label in (part.strip() for part in group.split(",")):
                assert any(label in names[n] for n, _ in selectors), f"no metric in {expr!r} has label {label}"
    # Every instrument family is on the dashboard somewhere.
    families = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in names}
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in seen}
    assert families - shown == set()
