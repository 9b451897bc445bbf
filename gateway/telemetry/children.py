"""Labelled children of Prometheus metrics, looked up once: `metric.labels(...)` builds a key and takes a lock on
every call, which the hot path should pay only the first time a label set is seen."""

from __future__ import annotations

from typing import Any


class Children:
    """The labelled child of any metric, cached by the metric and its label values."""

    def __init__(self) -> None:
        self._children: dict[tuple[Any, ...], Any] = {}

    def __call__(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child
