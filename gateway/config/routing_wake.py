"""A backend's on-demand boot (`wake:`): the action that starts it, how long requests are held for it, and the
optional action that puts it back to sleep when idle. Read by `wake_config`; run by gateway.providers.wake."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gateway.config.fields import (
    ConfigError,
    _Node,
    _positive_int,
    _str,
    _str_list,
    _str_map,
    _url,
    parse_duration,
)

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
_HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True, slots=True)
class HttpAction:
    """Call a URL (a webhook, a cloud API); a status ≥ 400 is a failure."""

    url: str
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)  # may hold tokens


@dataclass(frozen=True, slots=True)
class KubernetesAction:
    """Scale a Deployment through its scale subresource, with the pod's service-account credentials."""

    namespace: str
    deployment: str
    replicas: int = 1
    api_server: str = "https://kubernetes.default.svc"
    token_file: str = f"{SERVICE_ACCOUNT}/token"
    ca_file: str = f"{SERVICE_ACCOUNT}/ca.crt"


@dataclass(frozen=True, slots=True)
class WakeAction:
    """Exactly one of: a command (run without a shell), an HTTP call, a Kubernetes scale."""

    command: tuple[str, ...] = ()
    http: HttpAction | None = None
    kubernetes: KubernetesAction | None = None

    @property
    def kind(self) -> str:
        """ "command", "http" or "kubernetes"."""
        return "command" if self.command else "http" if self.http is not None else "kubernetes"


@dataclass(frozen=True, slots=True)
class IdleConfig:
    """Put the backend back to sleep after `after` seconds without a request."""

    after: float
    action: WakeAction


@dataclass(frozen=True, slots=True)
class WakeConfig:
    """How a sleeping backend is woken, and how requests wait for it."""

    action: WakeAction
    timeout: float = 120.0  # the longest a request is held (and the wake may take)
    ready_path: str = "/v1/models"  # on the base URL's host; polled until it answers 200
    max_waiting: int = 1000  # more held requests are refused at once (503)
    poll_interval: float = 0.25  # a probe of a local server costs nothing; it bounds the wait past the boot
    idle: IdleConfig | None = None


def _action(node: _Node, replicas: int) -> WakeAction:
    command = tuple(node.get("command", _str_list, list[str]()))
    http = node.get("http", lambda v, p: _http(_Node(v, p)), None)
    kubernetes = node.get("kubernetes", lambda v, p: _kubernetes(_Node(v, p), replicas), None)
    if sum(1 for part in (command, http, kubernetes) if part) != 1:
        raise ConfigError(f"{node.path}: needs exactly one of `command`, `http` or `kubernetes`")
    return WakeAction(command=command, http=http, kubernetes=kubernetes)


def _http(node: _Node) -> HttpAction:
    method = node.get("method", _str, "POST").upper()
    if method not in _HTTP_METHODS:
        raise ConfigError(f"{node.at('method')}: expected one of {', '.join(_HTTP_METHODS)}, got {method!r}")
    action = HttpAction(
        url=node.require("url", _url),
        method=method,
        headers=node.get("headers", _str_map, MappingProxyType({})),
    )
    node.done()
    return action


def _replicas(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{path}: expected a whole number of replicas ≥ 0, got {value!r}")
    return value


def _kubernetes(node: _Node, replicas: int) -> KubernetesAction:
    defaults = KubernetesAction(namespace="", deployment="")
    action = KubernetesAction(
        namespace=node.require("namespace", _str),
        deployment=node.require("deployment", _str),
        replicas=node.get("replicas", _replicas, replicas),
        api_server=node.get("api_server", _url, defaults.api_server).rstrip("/"),
        token_file=node.get("token_file", _str, defaults.token_file),
        ca_file=node.get("ca_file", _str, defaults.ca_file),
    )
    node.done()
    return action


def _idle(node: _Node) -> IdleConfig:
    after = node.require("after", parse_duration)
    idle = IdleConfig(after=after, action=_action(node, replicas=0))
    node.done()
    return idle


def wake_config(node: _Node) -> WakeConfig:
    """A backend's `wake:` section."""
    ready_path = node.get("ready_path", _str, "/v1/models")
    if not ready_path.startswith("/"):
        raise ConfigError(f"{node.at('ready_path')}: expected a path starting with '/', got {ready_path!r}")
    wake = WakeConfig(
        action=_action(node, replicas=1),
        timeout=node.get("timeout", parse_duration, 120.0),
        ready_path=ready_path,
        max_waiting=node.get("max_waiting", _positive_int, 1000),
        poll_interval=node.get("poll_interval", parse_duration, 0.25),
        idle=node.get("idle", lambda v, p: _idle(_Node(v, p)), None),
    )
    node.done()
    return wake
