"""The house's layering, read from the imports (every import: at the top, under TYPE_CHECKING, or in a function), so
the design holds in CI and not in a reviewer's memory.

- the engine knows neither telemetry nor the front door (it emits to a `CallObserver`; doors call it);
- the policies (auth, cache, rate limits, stats) know no engine: they return what they decide;
- config knows no wire format (no codec);
- providers know no engine, no policy and no front door;
- the reference servers share only the generated contracts and a few small helpers with the gateway.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ("gateway.auth", "gateway.cache", "gateway.ratelimit", "gateway.stats")
# What `authsvc/` and `statssvc/` may use of the gateway: config reading, the gRPC server with health and
# reflection, the process's event loop and signals.
SHARED_HELPERS = ("gateway.config", "gateway.grpc_server", "gateway.process", "gateway.tls")

# (the importing packages, the packages they must not import)
FORBIDDEN: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    (("gateway.engine",), ("gateway.telemetry", "gateway.frontdoor", "gateway.assemble", "gateway.cli")),
    (POLICIES, ("gateway.engine", "gateway.frontdoor", "gateway.telemetry", "gateway.assemble")),
    (("gateway.config",), ("gateway.codec",)),
    (("gateway.providers",), ("gateway.engine", *POLICIES, "gateway.frontdoor", "gateway.telemetry")),
    (("gateway.codec",), ("gateway.engine", "gateway.providers", *POLICIES, "gateway.frontdoor")),
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every module `path` imports (relative imports resolved), with its line."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:  # `from gateway import engine` imports a package too
                yield node.lineno, f"{base}.{alias.name}"


def sources(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package.replace(".", "/")).rglob("*.py"))


def violations(packages: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sources(*packages):
        for line, name in imports(path):
            if _within(name, forbidden):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return sorted(set(found))


@pytest.mark.parametrize(("packages", "forbidden"), FORBIDDEN, ids=lambda v: "+".join(v) if isinstance(v, tuple) else v)
def test_no_import_crosses_a_layer_upwards(packages: tuple[str, ...], forbidden: tuple[str, ...]) -> None:
    assert sources(*packages), f"no sources found for {packages}"
    assert violations(packages, forbidden) == []


@pytest.mark.parametrize("server", ["authsvc", "statssvc"])
def test_the_reference_servers_share_only_the_contracts_and_the_helpers(server: str) -> None:
    found = []
    for path in sources(server):
        for line, name in imports(path):
            if _within(name, ("gateway",)) and not _within(name, SHARED_HELPERS):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert found == []


def test_the_checker_sees_a_violation() -> None:
    # The rules above are only as good as the reading of imports: a known edge must be found.
    assert violations(("gateway.frontdoor",), ("gateway.call",)), "the front door imports the call contract"
    assert any(name == "gateway.engine.record" for _, name in imports(ROOT / "gateway/engine/core.py"))
