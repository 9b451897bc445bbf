"""What waking (and putting to sleep) a backend does: run a command, call a URL, or scale a Kubernetes Deployment;
and the readiness poll that says it is up. Each action returns its output for the log, or raises `ActionFailed`."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import orjson

from gateway.config.routing_wake import HttpAction, KubernetesAction, WakeAction

_OUTPUT_MAX = 4096  # the tail of an action's output kept for the log
_READY_TIMEOUT = 2.0  # one readiness probe


class ActionFailed(Exception):
    """The action failed: a non-zero exit, an HTTP status ≥ 400, a Kubernetes error; `output` is what it said."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output[-_OUTPUT_MAX:]


class CommandRun:
    """A started command: it may exit (0: fine, else `ActionFailed`) or keep running (a server started in place)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self._output = bytearray()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        while chunk := await stream.read(4096):
            self._output += chunk
            del self._output[:-_OUTPUT_MAX]
        await self.process.wait()

    @property
    def output(self) -> str:
        """The tail of what the command printed."""
        return self._output.decode("utf-8", "replace")

    def check(self) -> None:
        """Raise `ActionFailed` when the command has exited with a non-zero status."""
        code = self.process.returncode
        if code is not None and code != 0 and self._reader.done():
            raise ActionFailed(f"the command exited with status {code}", self.output)

    async def finished(self) -> None:
        """Wait for the command to exit, then `check` it."""
        await asyncio.shield(self._reader)
        self.check()

    def detach(self) -> None:
        """Stop reading the command's output, leaving it running (it is the backend, or it started it)."""
        self._reader.cancel()

    def stop(self) -> None:
        """Kill a command still running (a wake that timed out) and stop reading it."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        self._reader.cancel()


async def start_command(command: tuple[str, ...]) -> CommandRun:
    """Start `command` (no shell), its output captured."""
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # the gateway's signals (Ctrl-C) are not the backend's
        )
    except OSError as exc:
        raise ActionFailed(f"the command could not start: {exc}") from exc
    return CommandRun(process)


async def call_http(session: aiohttp.ClientSession, action: HttpAction) -> str:
    """Call the action's URL; its answer's text."""
    try:
        async with session.request(action.method, action.url, headers=dict(action.headers)) as resp:
            text = await resp.text(errors="replace")
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise ActionFailed(f"{action.method} {action.url} failed: {exc!r}") from exc
    if resp.status >= 400:
        raise ActionFailed(f"{action.method} {action.url} answered {resp.status}", text)
    return text


def _read_credentials(action: KubernetesAction) -> tuple[str, ssl.SSLContext]:
    token = Path(action.token_file).read_text(encoding="utf-8").strip()
    return token, ssl.create_default_context(cafile=action.ca_file)


async def scale_deployment(session: aiohttp.ClientSession, action: KubernetesAction) -> str:
    """PATCH the Deployment's scale subresource to `replicas` (merge patch, the service account's bearer token,
    the API server checked against the service account's CA)."""
    try:
        token, context = await asyncio.to_thread(_read_credentials, action)
    except (OSError, ssl.SSLError) as exc:
        raise ActionFailed(f"the service-account credentials could not be read: {exc}") from exc
    url = f"{action.api_server}/apis/apps/v1/namespaces/{action.namespace}/deployments/{action.deployment}/scale"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/merge-patch+json"}
    body = orjson.dumps({"spec": {"replicas": action.replicas}})
    try:
        async with session.patch(url, data=body, headers=headers, ssl=context) as resp:
            text = await resp.text(errors="replace")
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise ActionFailed(f"PATCH {url} failed: {exc!r}") from exc
    if resp.status >= 400:
        raise ActionFailed(f"PATCH {url} answered {resp.status}", text)
    return text


async def run_action(session: aiohttp.ClientSession, action: WakeAction) -> CommandRun | str:
    """Start the action: a running command (checked while waiting), or the finished call's output."""
    if action.command:
        return await start_command(action.command)
    if action.http is not None:
        return await call_http(session, action.http)
    assert action.kubernetes is not None
    return await scale_deployment(session, action.kubernetes)


def ready_url(base_url: str, ready_path: str) -> str:
    """`ready_path` on the base URL's scheme and host (`http://h:8000/v1` + `/v1/models`)."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}{ready_path}"


async def is_ready(session: aiohttp.ClientSession, url: str) -> bool:
    """Whether `url` answers 200 now."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=_READY_TIMEOUT)) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, OSError, TimeoutError):
        return False
