"""Read a Dockerfile into its stages and replay a stage's steps on this machine, under a directory standing for `/`.

These machines reach no container registry, so the image cannot be built here; what can be checked is that the
Dockerfile's own steps, run as written (paths moved under a temporary root), install a working tollgate.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

_ABSOLUTE = re.compile(r"(?<![\w./$-])/(?=[A-Za-z])")  # a `/` that begins an absolute path in a shell word


@dataclass
class Instruction:
    """One Dockerfile instruction: `COPY --from=build /a /b` is ("COPY", "--from=build /a /b")."""

    keyword: str
    text: str

    def words(self) -> list[str]:
        """The arguments, as a JSON array (exec form) or split like a shell would."""
        if self.text.startswith("["):
            value = json.loads(self.text)
            assert isinstance(value, list)
            return [str(item) for item in value]
        return shlex.split(self.text)


@dataclass
class Stage:
    """`FROM image [AS name]` and the instructions under it."""

    image: str
    name: str
    steps: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        """The stage's instructions of one kind, in order."""
        return [step for step in self.steps if step.keyword == keyword]

    def env(self) -> dict[str, str]:
        """`ENV k=v ...` of this stage, in order (values as written, `$VAR` not expanded)."""
        values: dict[str, str] = {}
        for step in self.all("ENV"):
            for word in step.words():
                key, _, value = word.partition("=")
                values[key] = value
        return values


def parse(path: Path) -> list[Stage]:
    """The stages of a Dockerfile: continuation lines joined, comments and blank lines dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, text = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = text.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].steps.append(Instruction(keyword, " ".join(text.split())))
    return stages


def ignored_by(dockerignore: Path) -> list[str]:
    """The patterns of a .dockerignore (no `!` exceptions are used in ours, so none are supported)."""
    patterns = [line.strip() for line in dockerignore.read_text().splitlines()]
    patterns = [p.rstrip("/") for p in patterns if p and not p.startswith("#")]
    assert not any(p.startswith("!") for p in patterns), "exceptions (!) are not supported by this replay"
    return patterns


def is_ignored(relative: str, patterns: list[str]) -> bool:
    """Whether the context path `relative` (or a folder above it) is left out of the build context."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(prefix.rpartition("/")[2], bare):
                return True
    return False


class Replay:
    """Runs a stage's COPY, WORKDIR, ENV and RUN steps with every absolute path moved under `root`."""

    def __init__(self, context: Path, root: Path, python_dir: Path) -> None:
        self.context = context
        self.root = root
        self.ignore = ignored_by(context / ".dockerignore")
        self.python_dir = python_dir  # where `python` is found, standing for the base image's
        self.workdir = root
        self.env: dict[str, str] = {}

    def path(self, image_path: str) -> Path:
        """Where an absolute path of the image lives in the replay."""
        assert image_path.startswith("/"), image_path
        return self.root / image_path.lstrip("/")

    def rewrite(self, command: str) -> str:
        """A shell command with its absolute paths moved under the root."""
        return _ABSOLUTE.sub(f"{self.root}/", command)

    def copy(self, words: list[str]) -> None:
        """`COPY src... dest` from the build context, honouring .dockerignore."""
        assert not any(w.startswith("--") for w in words), f"COPY flags are not replayed: {words}"
        *sources, dest = words
        target = self.path(dest) if dest.startswith("/") else self.workdir / dest
        for source in sources:
            assert not is_ignored(source, self.ignore), f"COPY {source}: .dockerignore leaves it out of the context"
            origin = self.context / source
            assert origin.exists(), f"COPY {source}: not in the build context"
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=self._ignored_names, dirs_exist_ok=True)
            else:
                into = target / origin.name if dest.endswith("/") or len(sources) > 1 else target
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, into)

    def _ignored_names(self, directory: str, names: list[str]) -> list[str]:
        relative = os.path.relpath(directory, self.context)
        return [n for n in names if is_ignored(f"{relative}/{n}", self.ignore)]

    def run(self, command: str, *, drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        """`RUN command` (shell form), with `drop`'s words removed (e.g. `--no-cache-dir`, for a warm local cache)."""
        for word in drop:
            command = command.replace(f" {word}", "")
        env = {**os.environ, **self.env, "PATH": f"{self.python_dir}{os.pathsep}{os.environ['PATH']}"}
        return subprocess.run(
            ["/bin/sh", "-c", self.rewrite(command)],
            cwd=self.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    def stage(self, stage: Stage, *, drop: tuple[str, ...] = ()) -> None:
        """Every step of a build stage, in order; a failing RUN fails with its output."""
        for step in stage.steps:
            if step.keyword == "WORKDIR":
                self.workdir = self.path(step.text)
                self.workdir.mkdir(parents=True, exist_ok=True)
            elif step.keyword == "ENV":
                self.env.update(word.partition("=")[::2] for word in step.words())
            elif step.keyword == "COPY":
                self.copy(step.words())
            elif step.keyword == "RUN":
                done = self.run(step.text, drop=drop)
                assert done.returncode == 0, f"RUN {step.text}\n{done.stdout}\n{done.stderr}"
            else:
                raise AssertionError(f"{step.keyword} in a build stage is not replayed")
