"""The `kubernetes` wake action against an in-repo fake API server over TLS (a throwaway CA from trustme): the
documented request (PATCH the Deployment's scale subresource, a merge patch, the service account's bearer token, the
server checked against the service account's CA), the backend woken by it, and an API error as a failed wake."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.config import BackendConfig
from gateway.config.routing_wake import KubernetesAction, WakeAction, WakeConfig
from gateway.errors import ServiceUnavailableError
from gateway.providers.wake import Waker
from gateway.telemetry.routing_metrics import RoutingMetrics
from gateway.testing.fake_openai import FakeOpenAI
from tests.providers.serving import served

TOKEN = "sa-token-abc"
SCALE_PATH = "/apis/apps/v1/namespaces/ml/deployments/vllm/scale"


@dataclass
class FakeKubernetes:
    """The one API the action uses; on a good PATCH it 'scales up' by starting the backend on `backend_port`."""

    backend_port: int
    url: str = ""
    seen: list[dict[str, Any]] = field(default_factory=list)
    refuse: bool = False
    backend: FakeOpenAI | None = None

    async def scale(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.seen.append(
            {
                "method": request.method,
                "path": request.path,
                "content_type": request.headers.get("Content-Type"),
                "authorization": request.headers.get("Authorization"),
                "body": body,
            }
        )
        if self.refuse:
            message = 'deployments.apps "vllm" is forbidden: cannot patch resource "deployments/scale"'
            status = {"kind": "Status", "status": "Failure", "message": message, "code": 403}
            return web.json_response(status, status=403)
        if self.backend is None:
            self.backend = FakeOpenAI(chunks=2)
            asyncio.get_running_loop().call_later(0.3, lambda: asyncio.ensure_future(self._boot()))
        return web.json_response({"kind": "Scale", "spec": {"replicas": body["spec"]["replicas"]}})

    async def _boot(self) -> None:
        assert self.backend is not None
        await self.backend.start(port=self.backend_port)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[tuple[FakeKubernetes, KubernetesAction]]:
    ca = trustme.CA()
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ssl)
    (tmp_path / "token").write_text(TOKEN + "\n")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    fake = FakeKubernetes(backend_port=free_port())
    app = web.Application()
    app.router.add_route("PATCH", SCALE_PATH, fake.scale)
    async with served(app, server_ssl) as port:
        action = KubernetesAction(
            namespace="ml",
            deployment="vllm",
            replicas=1,
            api_server=f"https://127.0.0.1:{port}",
            token_file=str(tmp_path / "token"),
            ca_file=str(tmp_path / "ca.crt"),
        )
        yield fake, action
        if fake.backend is not None:
            await fake.backend.stop()


def waker(fake: FakeKubernetes, action: KubernetesAction, metrics: RoutingMetrics) -> Waker:
    backend = BackendConfig(name="vllm", provider="vllm", base_url=f"http://127.0.0.1:{fake.backend_port}/v1")
    wake = WakeConfig(action=WakeAction(kubernetes=action), timeout=5.0, poll_interval=0.05)
    return Waker(backend, wake, observer=metrics)


async def test_the_scale_subresource_is_patched_and_the_backend_woken(
    kube: tuple[FakeKubernetes, KubernetesAction],
) -> None:
    fake, action = kube
    metrics = RoutingMetrics(CollectorRegistry())
    sleeper = waker(fake, action, metrics)
    try:
        await asyncio.gather(*(sleeper.hold() for _ in range(5)))  # five held calls, one PATCH
    finally:
        await sleeper.close()
    assert fake.seen == [
        {
            "method": "PATCH",
            "path": SCALE_PATH,
            "content_type": "application/merge-patch+json",
            "authorization": f"Bearer {TOKEN}",
            "body": {"spec": {"replicas": 1}},
        }
    ]
    assert metrics.wakes.labels("vllm", "ok")._value.get() == 1
    assert metrics.held.labels("vllm")._value.get() == 0
    assert not sleeper.asleep


async def test_an_api_error_fails_every_held_call(
    kube: tuple[FakeKubernetes, KubernetesAction], caplog: pytest.LogCaptureFixture
) -> None:
    fake, action = kube
    fake.refuse = True
    metrics = RoutingMetrics(CollectorRegistry())
    sleeper = waker(fake, action, metrics)
    try:
        results = await asyncio.gather(*(sleeper.hold() for _ in range(3)), return_exceptions=True)
    finally:
        await sleeper.close()
    for result in results:
        assert isinstance(result, ServiceUnavailableError) and result.code == "backend_wake_failed"
        assert result.retry_after is not None and result.retry_after > 0
    assert len(fake.seen) == 1
    assert metrics.wakes.labels("vllm", "failed")._value.get() == 1
    assert "forbidden" in caplog.text  # the action's output is logged
    assert TOKEN not in caplog.text


async def test_an_untrusted_server_is_refused(kube: tuple[FakeKubernetes, KubernetesAction], tmp_path: Path) -> None:
    fake, action = kube
    other = tmp_path / "other-ca.crt"
    trustme.CA().cert_pem.write_to_path(str(other))
    untrusted = replace(action, ca_file=str(other))
    sleeper = waker(fake, untrusted, RoutingMetrics(CollectorRegistry()))
    try:
        with pytest.raises(ServiceUnavailableError):
            await sleeper.hold()
    finally:
        await sleeper.close()
    assert fake.seen == []
