"""The reference auth server: `AuthService`, `grpc.health.v1` and reflection on one port, reloading its key file."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from authsvc.keyfile import utc_now
from authsvc.servicer import AuthServicer
from authsvc.store import KeyStore
from gateway.config.tls import ServerTLS
from gateway.grpc_server import GrpcServer, start_grpc_server
from tollgate.auth.v1 import auth_pb2 as pb
from tollgate.auth.v1 import auth_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AuthService"].full_name


class AuthServer:
    """A started auth server: its port, its servicer and key store, and a background task that reloads the keys."""

    def __init__(self, grpc_server: GrpcServer, servicer: AuthServicer, watcher: asyncio.Task[None]) -> None:
        self.grpc_server = grpc_server
        self.servicer = servicer
        self.store = servicer.store
        self._watcher = watcher

    @property
    def port(self) -> int:
        """The port it listens on (the one chosen when the address asked for port 0)."""
        return self.grpc_server.port

    async def reload(self) -> bool:
        """Re-read the key file now, changed or not (what SIGHUP does); True when new keys serve."""
        return await asyncio.to_thread(self.store.reload, force=True)

    async def stop(self, grace: float) -> None:
        """Stop reloading, report NOT_SERVING, and let in-flight checks finish for up to `grace` seconds."""
        self._watcher.cancel()
        await asyncio.wait([self._watcher])  # waits without re-raising the task's cancellation as our own
        await self.grpc_server.stop(grace)


async def start_auth_server(
    keys_path: str | Path,
    address: str,
    *,
    cache_ttl: float = 30.0,
    reload_interval: float = 2.0,
    now: Callable[[], datetime] = utc_now,
    tls: ServerTLS | None = None,
) -> AuthServer:
    """Serve the keys of `keys_path` on `address` (`host:port`, port 0 for any free port).

    The file must exist and validate (`FileNotFoundError`, `KeyFileError`); it is re-read when it changes, checked
    every `reload_interval` seconds. `cache_ttl` is how long the gateway may reuse a decision.
    """
    store = await asyncio.to_thread(KeyStore, keys_path, now=now)
    servicer = AuthServicer(store, cache_ttl=cache_ttl)
    grpc_server = await start_grpc_server(
        address,
        [(SERVICE_NAME, lambda server: pb_grpc.add_AuthServiceServicer_to_server(servicer, server))],
        tls=tls,
    )
    watcher = asyncio.create_task(store.watch(reload_interval), name="authsvc-key-reload")
    return AuthServer(grpc_server, servicer, watcher)
