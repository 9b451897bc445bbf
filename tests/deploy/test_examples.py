"""examples/: every config passes `tollgate check-config`, the one-process example serves a chat completion, and
every command block of the examples' READMEs runs as written (tests/readme_blocks.py: documented ports replaced by
free ones, servers in the background stopped after each block)."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import pytest

from gateway.cli import main as tollgate
from tests.deploy.running import clean_env, free_ports, running
from tests.readme_blocks import ROOT, Block, Workspace, blocks

EXAMPLES = ROOT / "examples"
CONFIGS = sorted(EXAMPLES.glob("*/gateway.yaml"))
BLOCKS = [block for readme in sorted(EXAMPLES.glob("**/README.md")) for block in blocks(readme)]


def test_every_example_has_a_config_and_runnable_readme() -> None:
    folders = sorted(p.parent.name for p in CONFIGS)
    assert folders == ["cache", "one-process", "redis-limits", "secured", "split"]
    for folder in folders:
        assert blocks(EXAMPLES / folder / "README.md"), f"examples/{folder}/README.md has no runnable block"
    assert all(block.standalone for block in BLOCKS)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.parent.name)
def test_every_example_config_passes_check_config(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert tollgate(["check-config", "--config", str(config)]) == 0
    assert capsys.readouterr().out.startswith("ok:")


def test_the_one_process_example_serves_a_chat_completion(tmp_path: Path) -> None:
    http, grpc = free_ports(2)
    tollgate_bin = str(Path(sys.executable).parent / "tollgate")
    argv = [tollgate_bin, "serve", "--config", str(EXAMPLES / "one-process" / "gateway.yaml")]
    env = clean_env(TOLLGATE_HTTP=f"127.0.0.1:{http}", TOLLGATE_GRPC=f"127.0.0.1:{grpc}")
    with running(argv, env, cwd=str(tmp_path)) as gateway:
        gateway.wait_http(f"http://127.0.0.1:{http}/readyz")
        body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{http}/v1/chat/completions", data=body)
        with urllib.request.urlopen(request, timeout=10) as answer:
            completion = json.loads(answer.read())
        assert completion["object"] == "chat.completion"
        assert completion["model"] == "gpt-4o-mini"
        assert completion["choices"][0]["message"]["content"]
        assert completion["usage"]["total_tokens"] > 0


@pytest.mark.parametrize("block", BLOCKS, ids=str)
def test_every_example_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    Workspace(tmp_path).run(block)
