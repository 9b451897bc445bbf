"""The README cannot rot: every block marked `<!-- readme-test -->` runs as written (tests/readme_blocks.py) against
a fresh gateway on the embedded default (what `make run` serves, on free ports standing for 8080 and 50051), and
every block marked `standalone` starts what it needs itself."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.running import clean_env, running
from tests.readme_blocks import ROOT, Block, Workspace, blocks

README = ROOT / "README.md"
BLOCKS = blocks(README)


@pytest.fixture(scope="module")
def gateway_workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """A workspace with `tollgate serve` (embedded default, like `make run`) listening on its 8080 and 50051."""
    workspace = Workspace(tmp_path_factory.mktemp("readme"))
    http, grpc = workspace.ports[8080], workspace.ports[50051]
    argv = [str(Path(sys.executable).parent / "tollgate"), "serve"]
    env = clean_env(TOLLGATE_HTTP=f"127.0.0.1:{http}", TOLLGATE_GRPC=f"127.0.0.1:{grpc}")
    with running(argv, env, cwd=str(workspace.directory)) as gateway:
        gateway.wait_http(f"http://127.0.0.1:{http}/readyz")
        yield workspace


def test_the_first_hours_blocks_are_marked() -> None:
    codes = [block.code for block in BLOCKS]
    assert any("tollgate --version" in code for code in codes)
    assert any("/v1/chat/completions" in code and "stream" in code for code in codes)
    assert any("from openai import OpenAI" in code for code in codes)
    walkthrough = [block for block in BLOCKS if "tollgate keys add" in block.code]
    assert len(walkthrough) == 1 and walkthrough[0].standalone


@pytest.mark.parametrize("block", [b for b in BLOCKS if not b.standalone], ids=str)
def test_block_runs_against_a_fresh_gateway(block: Block, gateway_workspace: Workspace) -> None:
    gateway_workspace.run(block)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.standalone], ids=str)
def test_standalone_block_runs(block: Block, tmp_path: Path) -> None:
    Workspace(tmp_path).run(block)


@pytest.mark.parametrize(
    ("code", "expect", "why"),
    [
        ("false\n", (), "exited with 1"),
        ("echo start; false; echo never\n", (), "exited with 1"),  # -e: a failing step fails the block
        ("curl -s localhost:1/x || true\n", ("answer",), "'answer' not in its output"),
        ("""echo '{"error":{"message":"Unknown model","type":"invalid_request_error"}}'\n""", (), "an error body"),
        ("""echo '{"type": "error", "error": {"type": "not_found_error"}}'\n""", (), "an error body"),
    ],
)
def test_a_block_that_fails_fails_the_test(code: str, expect: tuple[str, ...], why: str, tmp_path: Path) -> None:
    block = Block("example.md:1", "sh", code, standalone=True, expect=expect)
    with pytest.raises(AssertionError, match=why):
        Workspace(tmp_path).run(block)


def test_what_a_block_leaves_running_is_stopped(tmp_path: Path) -> None:
    block = Block("example.md:1", "sh", "sleep 300 &\necho $! > pid\n", standalone=True, expect=())
    Workspace(tmp_path).run(block)
    pid = int((tmp_path / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
