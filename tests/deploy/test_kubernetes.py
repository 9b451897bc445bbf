"""deploy/kubernetes: every Kustomize overlay renders (`kubectl kustomize`), validates offline against the Kubernetes
schemas (`kubernetes-validate`) and passes `checkov` (skips only in deploy/kubernetes/.checkov.yaml, with reasons);
and what the manifests ask of tollgate is what tollgate accepts: every container's args parse with the real CLI
parser, ports and probe paths are the ones it serves (each pod is started here, its mounts under a temporary
directory), the ConfigMap's file passes `tollgate check-config`, and the termination period covers the drain."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.cli import _parser as tollgate_parser
from gateway.config import load_config
from tests.deploy.dockerfile import parse
from tests.deploy.running import Running, clean_env, free_port, free_ports, running

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = sorted(p.name for p in (KUBERNETES / "overlays").iterdir() if p.is_dir())
CHECKOV = ROOT / ".tools" / "checkov" / "bin" / "checkov"
SCHEMA_VERSION = "1.32.0"  # the oldest Kubernetes these manifests promise (gRPC probes, autoscaling/v2)
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}  # not in the Kubernetes schemas; checked below instead
WORKLOADS = ("Deployment", "StatefulSet")
Obj = dict[str, Any]


def kubectl() -> str:
    found = shutil.which("kubectl") or ("/usr/bin/kubectl" if Path("/usr/bin/kubectl").exists() else None)
    assert found, "kubectl is needed to render deploy/kubernetes (`.ci/run` installs it; or apt-get install kubectl)"
    return found


@functools.cache
def rendered(overlay: str) -> tuple[str, list[Obj]]:
    """`kubectl kustomize` of one overlay: the YAML text and its objects."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(KUBERNETES / "overlays" / overlay)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"kubectl kustomize {overlay}:\n{done.stderr}"
    return done.stdout, [obj for obj in yaml.safe_load_all(done.stdout) if obj]


def objects(overlay: str, kind: str | None = None) -> list[Obj]:
    return [obj for obj in rendered(overlay)[1] if kind is None or obj["kind"] == kind]


def named(overlay: str, kind: str, name: str) -> Obj:
    found = [obj for obj in objects(overlay, kind) if obj["metadata"]["name"] == name]
    assert len(found) == 1, f"{overlay}: expected one {kind} {name}"
    return found[0]


def containers(overlay: str) -> Iterator[tuple[Obj, Obj]]:
    """(workload, container) for every container of every Deployment and StatefulSet."""
    for workload in rendered(overlay)[1]:
        if workload["kind"] in WORKLOADS:
            for container in workload["spec"]["template"]["spec"]["containers"]:
                yield workload, container


def parse_args(args: list[str]) -> argparse.Namespace:
    """The container's args through tollgate's own parser (the image's ENTRYPOINT is `tollgate`)."""
    try:
        return tollgate_parser().parse_args(args)
    except SystemExit as exc:
        raise AssertionError(f"tollgate {' '.join(args)}: the CLI refuses these args") from exc


def image_env() -> dict[str, str]:
    return parse(ROOT / "Dockerfile")[-1].env()


def config_map(overlay: str) -> Obj:
    (found,) = [cm for cm in objects(overlay, "ConfigMap") if cm["metadata"]["name"].startswith("tollgate-config")]
    return found


# The Secrets the operator creates (docs/deployment.md), as a fresh install's: no provider key, no API key yet.
SECRETS: dict[str, dict[str, str]] = {"tollgate-provider-keys": {}, "tollgate-auth-keys": {"keys.yaml": "keys: []\n"}}


def secret_env(container: Obj) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(SECRETS[source["secretRef"]["name"]])
    return env


def referenced_secrets(overlay: str) -> set[str]:
    names = set()
    for workload, container in containers(overlay):
        names |= {s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s}
        volumes = workload["spec"]["template"]["spec"].get("volumes", [])
        names |= {v["secret"]["secretName"] for v in volumes if "secret" in v}
    return names


# ------------------------------------------------------------------------------------------------ render, validate


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_and_validates_against_the_schemas(overlay: str) -> None:
    kinds = {obj["kind"] for obj in objects(overlay)}
    expected = {"Namespace", "ConfigMap", "Deployment", "StatefulSet", "Service"}
    assert expected | {"PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy"} <= kinds
    for obj in objects(overlay):
        where = f"{overlay}: {obj['kind']} {obj['metadata']['name']}"
        if (obj["apiVersion"], obj["kind"]) in CRDS:
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)
            continue
        try:
            kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{where}: {exc.message} at {list(exc.path)}") from None
        assert obj["metadata"].get("namespace") == "tollgate" or obj["kind"] == "Namespace", where


def test_overlays_are_the_promised_ones() -> None:
    assert OVERLAYS == ["one-process", "servicemonitor", "split"]
    split = {(o["kind"], o["metadata"]["name"]) for o in objects("split")}
    assert {("Deployment", "tollgate"), ("Deployment", "tollgate-engine"), ("Service", "tollgate-engine")} <= split
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget"} <= {k for k, n in split if n == "tollgate-engine"}
    assert ("StatefulSet", "tollgate-statssvc") in split
    (claim,) = named("split", "StatefulSet", "tollgate-statssvc")["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_the_operators_and_documented(overlay: str) -> None:
    # No placeholder Secret is rendered (`kubectl apply -k` would overwrite the real one with it).
    assert not objects(overlay, "Secret")
    assert referenced_secrets(overlay) == set(SECRETS)
    guide = (ROOT / "docs" / "deployment.md").read_text()
    for name in SECRETS:
        assert f"create secret generic {name}" in guide


def test_checkov_passes(tmp_path: Path) -> None:
    assert CHECKOV.exists(), "checkov is installed by `make test` / `make lint` (make .tools/checkov/bin/checkov)"
    files = []
    for overlay in OVERLAYS:
        path = tmp_path / f"{overlay}.yaml"
        path.write_text(rendered(overlay)[0])
        files += ["-f", str(path)]
    done = subprocess.run(
        [str(CHECKOV), "--config-file", str(KUBERNETES / ".checkov.yaml"), *files],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-6000:]
    assert "Failed checks: 0" in done.stdout


def test_every_skipped_check_says_why() -> None:
    lines = (KUBERNETES / ".checkov.yaml").read_text().splitlines()
    skips = [i for i, line in enumerate(lines) if line.strip().startswith("- CKV")]
    assert skips
    for i in skips:
        assert lines[i - 1].strip().startswith("#"), f"{lines[i].strip()}: no reason written above it"


# ------------------------------------------------------------------------------------- what tollgate accepts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_tollgate_with_args_it_accepts(overlay: str) -> None:
    services = {s["metadata"]["name"]: s for s in objects(overlay, "Service")}
    for workload, container in containers(overlay):
        assert "command" not in container, "the image's ENTRYPOINT (tollgate) is kept"
        args = parse_args(container["args"])
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        if args.command in ("serve", "frontdoor", "engine"):
            http = (getattr(args, "http", None) or image_env()["TOLLGATE_HTTP"]).rpartition(":")[2]
            grpc = (getattr(args, "grpc", None) or image_env()["TOLLGATE_GRPC"]).rpartition(":")[2]
            if args.command != "engine":
                assert ports["http"] == int(http), workload["metadata"]["name"]
            if args.command != "frontdoor":
                assert ports["grpc"] == int(grpc), workload["metadata"]["name"]
            else:
                assert "grpc" not in ports, "a front door serves no gRPC"
        if args.command in ("authsvc", "statssvc"):
            assert args.listen.startswith("0.0.0.0:"), "reachable from other pods"
            assert ports["grpc"] == int(args.listen.rpartition(":")[2])
        if args.command == "frontdoor":
            host, _, port = args.engine.rpartition(":")
            engine = services[host]
            assert int(port) in [p["port"] for p in engine["spec"]["ports"]]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            check = container.get(probe)
            if check is None:
                continue
            target = (check.get("httpGet") or check.get("grpc"))["port"]
            assert target in ports or target in ports.values(), f"{probe} on a port the container does not open"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_reach_named_container_ports(overlay: str) -> None:
    for service in objects(overlay, "Service"):
        selector = service["spec"]["selector"]
        pods = [
            c for w, c in containers(overlay) if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert pods, f"Service {service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            for container in pods:
                assert port["targetPort"] in [p["name"] for p in container["ports"]], service["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_let_each_service_port_in(overlay: str) -> None:
    policies = objects(overlay, "NetworkPolicy")
    assert any(p["spec"]["podSelector"] == {} and not p["spec"].get("ingress") for p in policies), "a default deny"
    for service in objects(overlay, "Service"):
        labels, container = next(
            (w["spec"]["template"]["metadata"]["labels"], c)
            for w, c in containers(overlay)
            if service["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        )
        workload_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for port in service["spec"]["ports"]:
            number = workload_ports.get(port["targetPort"], port["targetPort"])
            admitted = [
                p
                for p in policies
                if p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()
                and p["spec"]["podSelector"]
                and any(number in [x["port"] for x in rule.get("ports", [])] for rule in p["spec"].get("ingress", []))
            ]
            assert admitted, f"{overlay}: no NetworkPolicy lets {service['metadata']['name']}:{number} in"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_configmap_passes_check_config(overlay: str, tmp_path: Path) -> None:
    ((name, text),) = config_map(overlay)["data"].items()
    path = tmp_path / name
    path.write_text(text)
    env = clean_env()
    tollgate = Path(sys.executable).parent / "tollgate"
    done = subprocess.run(
        [str(tollgate), "check-config", "--config", str(path)], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok:")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_covers_the_drain_and_writes_go_to_volumes(overlay: str, tmp_path: Path) -> None:
    ((name, text),) = config_map(overlay)["data"].items()
    (tmp_path / name).write_text(text)
    config = load_config(str(tmp_path / name), {})
    for workload, container in containers(overlay):
        pod = workload["spec"]["template"]["spec"]
        where = f"{overlay}: {workload['metadata']['name']}"
        security = container["securityContext"]
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert security["readOnlyRootFilesystem"] is True, where
        assert security["allowPrivilegeEscalation"] is False, where
        assert container["resources"]["requests"] and container["resources"]["limits"], where
        args = parse_args(container["args"])
        writable = [m["mountPath"] for m in container.get("volumeMounts", []) if not m.get("readOnly")]
        if args.command in ("serve", "engine", "frontdoor"):
            sleep = container["lifecycle"]["preStop"]["exec"]["command"]
            assert sleep[0] == "sleep", where
            needed = int(sleep[1]) + config.server.drain_delay + config.server.shutdown_grace + 1
            assert pod["terminationGracePeriodSeconds"] >= needed, where
        if args.command in ("serve", "engine"):  # the spool must be writable, and outlive a container restart
            assert config.stats is not None
            assert any(config.stats.spool_dir.startswith(m) for m in writable), where
        if args.command == "statssvc":
            claims = [c["metadata"]["name"] for c in workload["spec"]["volumeClaimTemplates"]]
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            (home,) = [mounts[m] for m in mounts if args.db.startswith(m + "/")]
            assert home in claims, f"{where}: the usage database is on a persistent volume"


def test_the_servicemonitor_scrapes_the_gateways_metrics_port() -> None:
    (monitor,) = objects("servicemonitor", "ServiceMonitor")
    service = named("servicemonitor", "Service", "tollgate")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
    assert endpoint["path"] == "/metrics"


# ------------------------------------------------------------------------------------ each pod, started here


class Pod:
    """A container of a rendered workload run on this machine: its mounts under `root`, its ConfigMap and Secret
    files written there, the image's environment, and the listen ports moved to free ones."""

    def __init__(self, overlay: str, container: Obj, root: Path) -> None:
        self.overlay, self.container, self.root = overlay, container, root
        self.mounts = {m["mountPath"]: root / m["mountPath"].lstrip("/") for m in container.get("volumeMounts", [])}
        workload = next(w for w, c in containers(overlay) if c is container)
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            folder = self.mounts[mount["mountPath"]]
            folder.mkdir(parents=True, exist_ok=True)
            volume = volumes.get(mount["name"], {})
            if "configMap" in volume:
                for key, text in named(overlay, "ConfigMap", volume["configMap"]["name"])["data"].items():
                    (folder / key).write_text(self.moved(text))
            if "secret" in volume:
                for key, text in SECRETS[volume["secret"]["secretName"]].items():
                    (folder / key).write_text(text)

    def moved(self, text: str) -> str:
        """`text` with every mount path in it moved under the root (in one pass: the root may be under /tmp)."""
        if not self.mounts:
            return text
        paths = "|".join(re.escape(p) for p in sorted(self.mounts, key=len, reverse=True))
        return re.sub(rf"(?<![\w/.])({paths})(?=/|\b|$)", lambda m: str(self.mounts[m.group(1)]), text)

    def argv(self, **replace: str) -> list[str]:
        args = [self.moved(arg) for arg in self.container["args"]]
        args = [replace.get(arg, arg) for arg in args]
        return [str(Path(sys.executable).parent / "tollgate"), *args]

    def env(self, **extra: str) -> dict[str, str]:
        env = clean_env(**secret_env(self.container))
        env.update({k: v for k, v in image_env().items() if k.startswith("TOLLGATE_")})
        env.update(extra)
        return env


def probe_paths(container: Obj) -> list[str]:
    return [container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe", "startupProbe")]


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as answer:
        status: int = answer.status
        return status


@contextlib.contextmanager
def started(pod: Pod, *, http: int = 0, grpc: int = 0, **replace: str) -> Iterator[Running]:
    env = pod.env(**({"TOLLGATE_HTTP": f"127.0.0.1:{http}"} if http else {}))
    env.update({"TOLLGATE_GRPC": f"127.0.0.1:{grpc}"} if grpc else {})
    with running(pod.argv(**replace), env, cwd=str(pod.root)) as process:
        yield process


def test_the_one_process_pod_serves_its_probes_and_metrics(tmp_path: Path) -> None:
    (container,) = [c for w, c in containers("servicemonitor") if w["metadata"]["name"] == "tollgate"]
    pod = Pod("servicemonitor", container, tmp_path)
    http, grpc = free_ports(2)
    with started(pod, http=http, grpc=grpc) as gateway:
        gateway.wait_http(f"http://127.0.0.1:{http}/readyz")
        gateway.wait_port(grpc)
        for path in [*probe_paths(container), "/metrics"]:
            assert get(f"http://127.0.0.1:{http}{path}") == 200, path
        assert gateway.stop() == 0, gateway.output()


def test_the_split_pods_serve_through_each_other(tmp_path: Path) -> None:
    engine_container = next(c for w, c in containers("split") if w["metadata"]["name"] == "tollgate-engine")
    front_container = next(c for w, c in containers("split") if w["metadata"]["name"] == "tollgate")
    engine_port, metrics_port, http = free_ports(3)
    engine_pod = Pod("split", engine_container, tmp_path / "engine")
    config = engine_pod.mounts["/etc/tollgate"] / "gateway.yaml"
    config.write_text(config.read_text().replace("0.0.0.0:9090", f"127.0.0.1:{metrics_port}"))
    with started(engine_pod, grpc=engine_port) as engine:
        engine.wait_port(engine_port)
        engine.wait_http(f"http://127.0.0.1:{metrics_port}/metrics")
        front = Pod("split", front_container, tmp_path / "front")
        address = parse_args(front_container["args"]).engine
        with started(front, http=http, **{address: f"127.0.0.1:{engine_port}"}) as frontdoor:
            frontdoor.wait_http(f"http://127.0.0.1:{http}/readyz")  # ready only when the engine answers health
            for path in probe_paths(front_container):
                assert get(f"http://127.0.0.1:{http}{path}") == 200, path
            assert frontdoor.stop() == 0, frontdoor.output()
        assert engine.stop() == 0, engine.output()


def test_the_auth_and_stats_pods_start_from_their_mounts(tmp_path: Path) -> None:
    for name in ("tollgate-authsvc", "tollgate-statssvc"):
        (container,) = [c for w, c in containers("one-process") if w["metadata"]["name"] == name]
        pod = Pod("one-process", container, tmp_path / name)
        listen = parse_args(container["args"]).listen
        port = free_port()
        with running(pod.argv(**{listen: f"127.0.0.1:{port}"}), pod.env(), cwd=str(pod.root)) as server:
            server.wait_port(port)
            # What the pod's gRPC probes ask (and, answered, the server is past its start: SIGTERM is handled).
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            assert server.stop() == 0, server.output()
