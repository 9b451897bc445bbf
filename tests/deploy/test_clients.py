"""buf.gen.local.yaml: Go and TypeScript clients generated offline with local plugins (protoc-gen-go and
protoc-gen-go-grpc from Debian, protoc-gen-es from npm), as docs/api.md says; the TypeScript type-checks."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools" / "node_modules"
PROTOS = sorted(p.relative_to(ROOT / "protos").with_suffix("") for p in (ROOT / "protos").rglob("*.proto"))


def test_local_template_generates_go_and_typescript(tmp_path: Path) -> None:
    for plugin in ("protoc-gen-go", "protoc-gen-go-grpc"):
        assert shutil.which(plugin), f"{plugin} is missing: apt-get install protoc-gen-go protoc-gen-go-grpc"
    for tool in ("buf", "protoc-gen-es", "tsc"):
        assert (TOOLS / ".bin" / tool).exists(), f"{tool} is missing: `make test` installs it into .tools/"
    env = {**os.environ, "PATH": f"{TOOLS / '.bin'}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [str(TOOLS / ".bin" / "buf"), "generate", "--template", "buf.gen.local.yaml", "-o", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for proto in PROTOS:  # e.g. tollgate/gateway/v1/gateway
        assert (tmp_path / "gen" / "go" / f"{proto}.pb.go").exists(), proto
        if "\nservice " in (ROOT / "protos" / proto).with_suffix(".proto").read_text():  # messages alone: no stubs
            assert (tmp_path / "gen" / "go" / f"{proto}_grpc.pb.go").exists(), proto
        assert (tmp_path / "gen" / "ts" / f"{proto}_pb.ts").exists(), proto
    go = (tmp_path / "gen" / "go" / "tollgate" / "gateway" / "v1" / "gateway_grpc.pb.go").read_text()
    assert "package gatewayv1" in go and "GatewayServiceClient" in go
    # The TypeScript compiles against the protobuf-es runtime the plugin came with.
    typescript = tmp_path / "gen" / "ts"
    (typescript / "node_modules").symlink_to(TOOLS)
    sources = [str(p) for p in typescript.rglob("*.ts") if "node_modules" not in p.parts]
    options = ["--noEmit", "--strict", "--target", "es2020", "--module", "nodenext", "--moduleResolution", "nodenext"]
    done = subprocess.run(
        [str(TOOLS / ".bin" / "tsc"), *options, "--skipLibCheck", *sources],
        cwd=typescript,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
