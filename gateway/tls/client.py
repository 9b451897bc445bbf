"""TLS for gRPC clients: `open_channel`, and `RenewingChannel`, a grpc.aio channel whose TLS files (CA, client
certificate and key) are re-read when they change on disk, as cert-manager rotates them, without a restart.

grpc's channel credentials are fixed when a channel opens, so the channel itself is replaced: at most once per
`check_every` seconds a call checks the files' stamps (`WatchedFiles`), and a changed, usable set opens a new
channel that later calls use; the old one is closed after a grace period, so calls on it finish. Stubs and
multicallables made from a `RenewingChannel` follow the swap, so callers keep theirs for the process's life.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from gateway.config.tls import ClientTLS
from gateway.tls.files import WatchedFiles, read_file

log = logging.getLogger("tollgate.tls")

CHECK_EVERY = 5.0  # seconds between looks at the files: a stat of each, on a call's path
RETIRE_GRACE = 30.0  # how long calls on a replaced channel may still run


class RenewingChannel(grpc.aio.Channel):
    """A TLS channel to `target` that reopens itself when `tls`'s files change."""

    def __init__(
        self,
        target: str,
        tls: ClientTLS,
        open_channel: Callable[[], grpc.aio.Channel],
        *,
        check_every: float = CHECK_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tls = tls
        self._open = open_channel
        self._files = WatchedFiles(tls.ca, tls.cert, tls.key)
        self._channel = open_channel()
        self._check_every, self._clock = check_every, clock
        self._checked = clock()
        self._retiring: dict[asyncio.Task[None], grpc.aio.Channel] = {}  # replaced channels, closing after a grace
        self.target = target
        self.generation = 0  # how many times the channel was reopened

    def current(self) -> grpc.aio.Channel:
        """The channel to use now, reopened first when the files changed (and the new ones are usable)."""
        now = self._clock()
        if now - self._checked >= self._check_every:
            self._checked = now
            stamp = self._files.changed()
            if stamp is not None:
                self._renew(stamp)
        return self._channel

    def _renew(self, stamp: Any) -> None:
        try:
            if self._tls.cert:
                ssl.create_default_context().load_cert_chain(self._tls.cert, self._tls.key)  # a matching pair?
            fresh = self._open()
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._files.refuse(stamp, exc)
            return
        self._files.accept(stamp)
        old, self._channel = self._channel, fresh
        self.generation += 1
        log.info("TLS files for %s changed: new connections use them", self.target)
        task = asyncio.get_running_loop().create_task(old.close(RETIRE_GRACE))
        self._retiring[task] = old
        task.add_done_callback(lambda done: self._retiring.pop(done, None))

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A multicallable that calls on whichever channel is current."""
        return _Following(self, "unary_unary", method, args, kwargs)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """As `unary_unary`, for server streams."""
        return _Following(self, "unary_stream", method, args, kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """As `unary_unary`, for client streams."""
        return _Following(self, "stream_unary", method, args, kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """As `unary_unary`, for bidirectional streams."""
        return _Following(self, "stream_stream", method, args, kwargs)

    async def close(self, grace: float | None = None) -> None:
        """Close the current channel and any still being retired, all with `grace`."""
        retiring = list(self._retiring.items())
        for task, _ in retiring:
            task.cancel()
        for _, old in retiring:
            await old.close(grace)
        await self._channel.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """The current channel's state."""
        return self._channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        """Wait on the current channel."""
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        """Wait until the current channel is ready."""
        await self.current().channel_ready()

    async def __aenter__(self) -> RenewingChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close(None)


class _Following:
    """A multicallable bound to a method, made afresh on each channel the `RenewingChannel` moves to."""

    def __init__(self, owner: RenewingChannel, kind: str, method: str, args: Any, kwargs: Any) -> None:
        self._owner, self._kind, self._method, self._args, self._kwargs = owner, kind, method, args, kwargs
        self._on: grpc.aio.Channel | None = None
        self._call: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        channel = self._owner.current()
        if channel is not self._on:
            self._on, self._call = channel, getattr(channel, self._kind)(self._method, *self._args, **self._kwargs)
        return self._call(*args, **kwargs)


# ---------------------------------------------------------------------------------------------------- gRPC clients


def grpc_channel_credentials(tls: ClientTLS) -> grpc.ChannelCredentials:
    """What a client trusts (`ca`, else the system's roots) and presents (`cert` and `key`, for mutual TLS)."""
    return grpc.ssl_channel_credentials(
        root_certificates=read_file(tls.ca), private_key=read_file(tls.key), certificate_chain=read_file(tls.cert)
    )


def open_channel(
    target: str, tls: ClientTLS | None, options: Sequence[tuple[str, Any]] = (), *, check_every: float = CHECK_EVERY
) -> grpc.aio.Channel:
    """A grpc.aio channel to `target`: plaintext when `tls` is None, else TLS as configured, reopened with the new
    files when a CA or client certificate named there changes on disk (`RenewingChannel`)."""
    if tls is None:
        return grpc.aio.insecure_channel(target, options=list(options))
    named = [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []

    def secure() -> grpc.aio.Channel:
        return grpc.aio.secure_channel(target, grpc_channel_credentials(tls), options=[*options, *named])

    if not (tls.ca or tls.cert):
        return secure()  # the system's roots: nothing of ours to watch
    return RenewingChannel(target, tls, secure, check_every=check_every)


def grpc_client_context(tls: ClientTLS) -> ssl.SSLContext:
    """An `ssl` context for a gRPC connection of our own (`gateway.engine.exchange_wire`), as a channel's credentials
    would do it: trust `ca` (else the system's roots), present `cert` and `key` when given, and offer HTTP/2 by ALPN.
    Read afresh for each connection, so rotated files are used by the next one."""
    context = ssl.create_default_context(cafile=tls.ca or None)  # PEM, text around the certificates skipped
    if tls.cert and tls.key:
        context.load_cert_chain(tls.cert, tls.key)
    context.set_alpn_protocols(["h2"])
    return context
