"""Deployment files are checked like code: the compose stack against the Compose
specification, the Kubernetes manifests rendered and validated against the Kubernetes schemas,
the workflows against GitHub's schema, the Containerfile with hadolint, and every file any of
them names exists. (.ci/run also builds the image and gets a prediction out of it.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
COMPOSE_REGIONS = DEPLOY / "compose" / "compose.regions.yaml"
KUSTOMIZE = DEPLOY / "kubernetes"
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"needs {name}")
    return found


def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize(
    ("schema", "files"),
    [
        ("vendor.compose-spec", [COMPOSE, COMPOSE_REGIONS]),
        ("vendor.github-workflows", WORKFLOWS),
    ],
)
def test_files_validate_against_their_schemas(schema: str, files: list[Path]) -> None:
    assert files
    _run(_tool("check-jsonschema"), "--builtin-schema", schema, *map(str, files))


@pytest.mark.parametrize("stack", [COMPOSE, COMPOSE_REGIONS], ids=["one-region", "two-regions"])
def test_every_file_the_compose_stack_mounts_exists(stack: Path) -> None:
    compose = yaml.safe_load(stack.read_text())
    here = stack.parent
    named = set(compose.get("volumes", {}))
    checked = 0
    for service in compose["services"].values():
        build = service.get("build")
        if build:
            assert (here / build["context"] / build["dockerfile"]).is_file()
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source in named:
                continue
            assert (here / source).exists(), source
            checked += 1
    for secret in compose.get("secrets", {}).values():
        assert (here / secret["file"]).parent.is_dir(), secret  # the key itself is not in git
    assert checked >= 2


def _kustomizations() -> list[Path]:
    return sorted(KUSTOMIZE.rglob("kustomization.yaml"))


def test_every_file_the_kustomizations_name_exists() -> None:
    assert len(_kustomizations()) == 5
    for path in _kustomizations():
        spec = yaml.safe_load(path.read_text())
        for resource in spec.get("resources", []):
            assert (path.parent / resource).exists(), (path, resource)
        for generator in spec.get("configMapGenerator", []):
            for file in generator.get("files", []):
                assert (path.parent / file).is_file(), (path, file)


@pytest.mark.parametrize(
    "overlay", ["production", "development", "region-eu-west", "region-us-east"]
)
def test_kubernetes_overlays_render_and_validate(overlay: str, tmp_path: Path) -> None:
    rendered = _run(_tool("kubectl"), "kustomize", str(KUSTOMIZE / "overlays" / overlay))
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    kinds = {d["kind"] for d in documents}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
        "Job",
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
    } <= kinds
    for deployment in (d for d in documents if d["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert container["resources"]["limits"]["memory"]
    api = next(d for d in documents if d["metadata"]["name"] == "ai-photo-detector-api")
    probes = api["spec"]["template"]["spec"]["containers"][0]
    assert probes["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    out = tmp_path / f"{overlay}.yaml"
    out.write_text(rendered)
    report = _run(_tool("kubernetes-validate"), "--strict", str(out))
    assert "passed for resource deployment/ai-photo-detector-api" in report


def test_prometheus_rule_is_the_tested_rule_file() -> None:
    sys.path.insert(0, str(KUSTOMIZE))
    from render_rules import OUT, rendered

    assert OUT.read_text() == rendered(), "run python deploy/kubernetes/render_rules.py"


def test_workflows_run_only_what_exists() -> None:
    targets = set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), re.M))
    for workflow in WORKFLOWS:
        spec: dict[str, Any] = yaml.safe_load(workflow.read_text())
        for job in spec["jobs"].values():
            for step in job["steps"]:
                script = step.get("run", "")
                for target in re.findall(r"\bmake ([a-z-]+)", script):
                    assert target in targets, (workflow.name, target)
                for path in re.findall(r"\./(deploy/[\w./-]+)", script):
                    assert (REPO / path).is_file(), (workflow.name, path)
                for module in re.findall(r"-m (benchmarks\.\w+)", script):
                    assert (REPO / (module.replace(".", "/") + ".py")).is_file(), module


def test_containerfile_lints_clean_and_copies_what_exists() -> None:
    containerfile = REPO / "Containerfile"
    _run(_tool("hadolint"), str(containerfile))
    for source in re.findall(r"^COPY (?!--from)(\S+)", containerfile.read_text(), re.M):
        assert (REPO / source).exists(), source


def test_the_global_front_configuration_is_valid(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "APD_REGION_A": "eu",
        "APD_REGION_B": "us",
        "APD_REGION_A_ADDR": "127.0.0.1:18001",
        "APD_REGION_B_ADDR": "127.0.0.1:18002",
        "APD_FRONT_BIND": "127.0.0.1:18000",
        "APD_FRONT_DIR": str(DEPLOY / "regions"),
        "APD_FRONT_STATS": str(tmp_path / "stats.sock"),
    }
    config = DEPLOY / "regions" / "haproxy.cfg"
    done = subprocess.run(
        [_tool("haproxy"), "-c", "-f", str(config)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
