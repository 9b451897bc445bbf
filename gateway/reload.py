"""Config reload without a restart: on SIGHUP, on a change of the config file, and on the admin API's reload.

A reload reads the file again (`${VAR}` and `${file:…}` secrets included), builds the new config's assembly on what
the running one has (`gateway.assemble.successor`: unchanged backends keep their pools and health, limit counters
and cache entries carry over), and only then swaps it in; a bad file changes nothing and the old config serves on.
The doors call a `ServingEngine`, which takes the serving engine once per call: a call that started on the old
config finishes on it, and the old assembly is closed once its calls are done (or after `server.reload_grace`).

Every reload logs one line with its result and is counted in `tollgate_config_reloads_total{result}`; the hash of
the config serving (`gateway.config.digest`) is in `/readyz`, `tollgate_config_info`, the admin answer and every
usage record. Under `serve --workers N` each worker watches the file and takes SIGHUP from the supervisor; a reload
through the admin API of one worker signals the supervisor, which passes SIGHUP to every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from gateway.assemble import Assembly, restart_needed, successor
from gateway.call import CallContext
from gateway.config import ConfigError, load_config
from gateway.config.digest import config_hash
from gateway.engine.admin import check_admin
from gateway.errors import InvalidRequestError
from gateway.telemetry.build import config_secrets
from tollgate.gateway.v1 import admin_pb2
from tollgate.gateway.v1 import endpoints_pb2 as ep
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import responses_pb2 as rpb

log = logging.getLogger("tollgate")

T = TypeVar("T")
M = TypeVar("M")  # the messages of a stream
Chunk = pb.StreamChatCompletionResponse
SUCCESS, UNCHANGED, FAILURE = "success", "unchanged", "failure"


class Generation:
    """One assembly serving calls, and how many of them are in flight."""

    __slots__ = ("_idle", "assembly", "calls")

    def __init__(self, assembly: Assembly) -> None:
        self.assembly = assembly
        self.calls = 0
        self._idle: asyncio.Event | None = None

    def enter(self) -> None:
        self.calls += 1

    def leave(self) -> None:
        self.calls -= 1
        if not self.calls and self._idle is not None:
            self._idle.set()

    async def wait_idle(self, grace: float) -> bool:
        """Whether every call ended within `grace` seconds."""
        if not self.calls:
            return True
        self._idle = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._idle.wait()
        return not self.calls


class _Tracked(AsyncGenerator[M, None]):
    """A stream of one generation's engine that counts as its call until it ends or is closed; `athrow` reaches
    the engine's own stream (a shutdown's cut must be recorded as one)."""

    __slots__ = ("_done", "_generation", "_inner")

    def __init__(self, inner: AsyncGenerator[M, None], generation: Generation) -> None:
        self._inner = inner
        self._generation = generation
        self._done = False
        generation.enter()

    def _end(self) -> None:
        if not self._done:
            self._done = True
            self._generation.leave()

    async def asend(self, value: None) -> M:
        try:
            return await self._inner.asend(value)
        except BaseException:
            self._end()
            raise

    async def athrow(self, typ: Any, val: Any = None, tb: TracebackType | None = None) -> M:
        try:
            return await self._inner.athrow(typ, val, tb)
        except BaseException:
            self._end()
            raise

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._end()


class ServingEngine:
    """The engine the doors call: the serving generation's `EngineCore`, taken once per call (see the module)."""

    def __init__(self, assembly: Assembly) -> None:
        self.current = Generation(assembly)

    def swap(self, assembly: Assembly) -> Generation:
        """Serve `assembly` from the next call on; returns the generation it replaces."""
        old, self.current = self.current, Generation(assembly)
        return old

    async def _call(self, run: Callable[[Generation], Awaitable[T]]) -> T:
        generation = self.current
        generation.enter()
        try:
            return await run(generation)
        finally:
            generation.leave()

    async def create_chat_completion(
        self, params: pb.ChatCompletionParams, ctx: CallContext
    ) -> pb.CreateChatCompletionResponse:
        """One whole completion, on the config serving when it arrived."""
        return await self._call(lambda g: g.assembly.engine.create_chat_completion(params, ctx))

    def stream_chat_completion(self, params: pb.ChatCompletionParams, ctx: CallContext) -> AsyncGenerator[Chunk, None]:
        """A stream, on the config serving when it arrived, however long it runs."""
        generation = self.current
        return _Tracked(generation.assembly.engine.stream_chat_completion(params, ctx), generation)

    async def create_embeddings(
        self, request: pb.CreateEmbeddingsRequest, ctx: CallContext
    ) -> pb.CreateEmbeddingsResponse:
        """Embeddings, on the config serving when the call arrived."""
        return await self._call(lambda g: g.assembly.engine.create_embeddings(request, ctx))

    async def list_models(self, ctx: CallContext) -> pb.ListModelsResponse:
        """The serving config's models the caller may use."""
        return await self._call(lambda g: g.assembly.engine.list_models(ctx))

    async def count_tokens(self, params: pb.ChatCompletionParams, ctx: CallContext) -> pb.CountTokensResponse:
        """The input tokens of a chat request."""
        return await self._call(lambda g: g.assembly.engine.count_tokens(params, ctx))

    async def ready(self) -> bool:
        """Whether the serving engine takes traffic."""
        return await self.current.assembly.engine.ready()

    async def list_backends(self, ctx: CallContext) -> admin_pb2.ListBackendsResponse:
        """The serving config's targets and their health (admin only)."""
        return await self.current.assembly.engine.list_backends(ctx)

    # Legacy completions, images, audio, moderations, rerank (endpoints.proto), on the config serving when they came.
    async def create_completion(self, params: ep.CompletionParams, ctx: CallContext) -> ep.CreateCompletionResponse:
        """A whole legacy text completion."""
        return await self._call(lambda g: g.assembly.engine.create_completion(params, ctx))

    def stream_completion(
        self, params: ep.CompletionParams, ctx: CallContext
    ) -> AsyncGenerator[ep.StreamCompletionResponse, None]:
        """A streamed legacy text completion."""
        generation = self.current
        return _Tracked(generation.assembly.engine.stream_completion(params, ctx), generation)

    async def create_image(self, request: ep.CreateImageRequest, ctx: CallContext) -> ep.CreateImageResponse:
        """Generated images."""
        return await self._call(lambda g: g.assembly.engine.create_image(request, ctx))

    async def create_transcription(
        self, request: ep.CreateTranscriptionRequest, ctx: CallContext
    ) -> ep.CreateTranscriptionResponse:
        """The text of an audio file."""
        return await self._call(lambda g: g.assembly.engine.create_transcription(request, ctx))

    def stream_speech(
        self, request: ep.StreamSpeechRequest, ctx: CallContext
    ) -> AsyncGenerator[ep.StreamSpeechResponse, None]:
        """Spoken audio, streamed."""
        generation = self.current
        return _Tracked(generation.assembly.engine.stream_speech(request, ctx), generation)

    async def create_moderation(
        self, request: ep.CreateModerationRequest, ctx: CallContext
    ) -> ep.CreateModerationResponse:
        """Moderation results."""
        return await self._call(lambda g: g.assembly.engine.create_moderation(request, ctx))

    async def rerank(self, request: ep.RerankRequest, ctx: CallContext) -> ep.RerankResponse:
        """Documents ordered by relevance."""
        return await self._call(lambda g: g.assembly.engine.rerank(request, ctx))

    # The Responses API, on the config serving when the call came.
    async def create_response(self, params: rpb.ResponseParams, ctx: CallContext) -> rpb.Response:
        """A whole response."""
        return await self._call(lambda g: g.assembly.engine.create_response(params, ctx))

    def stream_response(
        self, params: rpb.ResponseParams, ctx: CallContext
    ) -> AsyncGenerator[rpb.StreamResponseResponse, None]:
        """A response's stream events."""
        generation = self.current
        return _Tracked(generation.assembly.engine.stream_response(params, ctx), generation)

    async def get_response(self, response_id: str, ctx: CallContext) -> rpb.Response:
        """A stored response of the caller's."""
        return await self._call(lambda g: g.assembly.engine.get_response(response_id, ctx))

    async def delete_response(self, response_id: str, ctx: CallContext) -> rpb.DeleteResponseResponse:
        """Forget a stored response of the caller's."""
        return await self._call(lambda g: g.assembly.engine.delete_response(response_id, ctx))

    async def list_response_input_items(
        self, request: rpb.ListResponseInputItemsRequest, ctx: CallContext
    ) -> rpb.ListResponseInputItemsResponse:
        """A page of a stored response's input items."""
        return await self._call(lambda g: g.assembly.engine.list_response_input_items(request, ctx))


@dataclass(frozen=True, slots=True)
class Reloaded:
    """What one reload did."""

    result: str  # SUCCESS, UNCHANGED or FAILURE
    config_hash: str  # the config serving after it
    previous_hash: str
    error: str = ""  # why a FAILURE was refused: the bad field's path and what is wrong with it
    restart_needed: tuple[str, ...] = ()

    def response(self) -> admin_pb2.ReloadResponse:
        """The admin API's answer."""
        return admin_pb2.ReloadResponse(
            result=self.result,
            config_hash=self.config_hash,
            previous_hash=self.previous_hash,
            restart_needed=self.restart_needed,
        )


def file_fingerprint(path: str) -> tuple[str, int, int, int] | None:
    """What changes when the file at `path` does: the file the path resolves to now (a Kubernetes ConfigMap swaps the
    `..data` symlink), its inode, mtime and size; None when it cannot be read."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return real, st.st_ino, st.st_mtime_ns, st.st_size


def _content_hash(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return ""


class Reloader:
    """Keeps the `ServingEngine` on the newest valid config: reloads on request, SIGHUP and a changed file."""

    def __init__(
        self,
        assembly: Assembly,
        path: str | None,
        env: Mapping[str, str],
        *,
        notify: Callable[[], None] | None = None,
        secrets: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.engine = ServingEngine(assembly)
        self._path = path
        self._env = env
        self._notify = notify  # after an admin reload: tell the other workers (the supervisor signals them)
        self._secrets = secrets  # the log masker learns a reloaded config's credentials
        self._lock = asyncio.Lock()
        self._retiring: dict[asyncio.Task[None], Generation] = {}
        self._watched = file_fingerprint(path) if path else None
        self._content = _content_hash(path) if path else ""
        self._background: list[asyncio.Task[Any]] = []
        metrics = assembly.telemetry.metrics
        if metrics is not None:
            metrics.serving(assembly.hash)

    @property
    def assembly(self) -> Assembly:
        """The assembly serving now."""
        return self.engine.current.assembly

    def config_hash(self) -> str:
        """The hash of the config serving now."""
        return self.assembly.hash

    async def reload(self, ctx: CallContext) -> admin_pb2.ReloadResponse:
        """The admin API's reload: the admin token first, then `run`; a refused config is a 400 naming its bad field."""
        check_admin(ctx, self.assembly.config.routing.admin)
        done = await self.run("admin")
        if done.result == FAILURE:
            raise InvalidRequestError(
                f"configuration not reloaded: {done.error}; config {done.config_hash} serves on", code="invalid_config"
            )
        if done.result == SUCCESS and self._notify is not None:
            self._notify()
        return done.response()

    async def run(self, trigger: str) -> Reloaded:
        """Reload now (one at a time); never raises."""
        async with self._lock:
            done = await self._reload()
        metrics = self.assembly.telemetry.metrics
        if metrics is not None and done.result != UNCHANGED:
            metrics.config_reloads.labels(SUCCESS if done.result == SUCCESS else FAILURE).inc()
        if done.result == FAILURE:
            log.error("config reload (%s) failed, config %s serves on: %s", trigger, done.config_hash, done.error)
        elif done.result == UNCHANGED:
            log.info("config reload (%s): unchanged, config %s", trigger, done.config_hash)
        else:
            restart = f"; needs a restart to apply: {', '.join(done.restart_needed)}" if done.restart_needed else ""
            log.info(
                "config reload (%s): config %s replaces %s; %s%s",
                trigger,
                done.config_hash,
                done.previous_hash,
                self.assembly.handover.summary(),
                restart,
            )
        return done

    async def _reload(self) -> Reloaded:
        old = self.assembly
        try:
            if self._path:
                self._watched, self._content = file_fingerprint(self._path), _content_hash(self._path)
            config = load_config(self._path, self._env)
            if config_hash(config) == old.hash:
                return Reloaded(UNCHANGED, old.hash, old.hash)
            new = successor(old, config)
        except ConfigError as exc:
            return Reloaded(FAILURE, old.hash, old.hash, str(exc))
        except Exception as exc:  # a part that could not be built: refused like a bad field, never half-swapped
            log.exception("config reload: building the new config failed")
            return Reloaded(FAILURE, old.hash, old.hash, f"{type(exc).__name__}: {exc}")
        if (failure := await self._take_over(old, new)) is not None:
            return Reloaded(FAILURE, old.hash, old.hash, failure)
        if self._secrets is not None:
            self._secrets(config_secrets(config))
        retired = self.engine.swap(new)
        task = asyncio.create_task(self._retire(retired, new), name=f"retire-config-{old.hash}")
        self._retiring[task] = retired
        task.add_done_callback(self._retiring.pop)
        return Reloaded(SUCCESS, new.hash, old.hash, restart_needed=tuple(restart_needed(old.config, config)))

    async def _take_over(self, old: Assembly, new: Assembly) -> str | None:
        """Point telemetry at `new` and start it; None, or why it could not start (then `old` is as it was)."""
        telemetry = new.telemetry
        telemetry.reconfigure(new.config)
        new.wire()
        try:
            await new.start()
        except Exception as exc:
            log.exception("config reload: starting the new config failed")
            await new.engine.close(keep=new.handover.parts)
            telemetry.reconfigure(old.config)
            old.wire()
            return f"starting the new config failed: {type(exc).__name__}: {exc}"
        if telemetry.metrics is not None:
            telemetry.metrics.serving(new.hash, old.hash)
        return None

    async def _retire(self, generation: Generation, replacement: Assembly) -> None:
        """Close `generation` once its calls are done, or after `server.reload_grace`."""
        grace = replacement.config.server.reload_grace
        try:
            if not await generation.wait_idle(grace):
                log.warning(
                    "config %s: %d calls still running %gs after the reload; closing its connections",
                    generation.assembly.hash,
                    generation.calls,
                    grace,
                )
        finally:
            await generation.assembly.close(replacement)

    # ------------------------------------------------------------------------------------------------ triggers

    def start(self) -> None:
        """Reload on SIGHUP, and when the config file changes (every `server.reload_poll` seconds)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        if self._path:
            self._background.append(asyncio.create_task(self._watch(self._path), name="config-watch"))

    def _on_sighup(self) -> None:
        self._background.append(asyncio.create_task(self.run("sighup"), name="config-reload"))
        self._background = [t for t in self._background if not t.done()]

    async def _watch(self, path: str) -> None:
        while True:
            interval = self.assembly.config.server.reload_poll
            await asyncio.sleep(interval or 1.0)
            if not interval:
                continue  # watching is off; the setting is read again after each reload
            seen = file_fingerprint(path)
            if seen is None or seen == self._watched:
                continue
            self._watched = seen
            content = _content_hash(path)
            if content and content != self._content:  # touched but the same: nothing to do
                await self.run("file")

    async def close(self) -> None:
        """Stop watching, and close every assembly: the retiring ones first (sparing what their successors took),
        then the serving one."""
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        await self.assembly.close()
