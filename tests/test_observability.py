"""Alert rules, dashboards and a real Prometheus scraping a running service."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from ai_photo_detector.serving.api.app import create_app
from ai_photo_detector.settings import Settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
RUNBOOK = Path(__file__).resolve().parents[1] / "docs" / "runbook.md"
METRIC = re.compile(r"\b(apd_[a-z0-9_]+|up)\b")


def _queries() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        found[path.name] = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    found["alerts.yml"] = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    return found


def _exported(bundle_dir: Path) -> set[str]:
    """Every sample name the service can export, from its registry's metric families."""
    with TestClient(create_app(Settings(model=str(bundle_dir)))) as client:
        registry = client.app.state.services.metrics.registry  # type: ignore[attr-defined]
        names = {"up"}
        for family in registry.collect():
            suffixes = {
                "counter": ["_total"],
                "histogram": ["_bucket", "_sum", "_count"],
                "info": ["_info"],
            }.get(family.type, [""])
            names |= {family.name + suffix for suffix in suffixes}
    return names


def test_every_metric_a_dashboard_or_rule_queries_is_exported(bundle_dir: Path) -> None:
    exported = _exported(bundle_dir)
    queries = _queries()
    assert len(queries) == 4 and all(queries.values())
    for source, expressions in queries.items():
        for expression in expressions:
            for name in METRIC.findall(expression):
                assert name in exported, f"{source} queries {name}, which nothing exports"


def test_every_alert_has_a_summary_and_a_runbook_section() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    runbook = RUNBOOK.read_text().lower()
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        assert rule["annotations"]["summary"]
        anchor = rule["annotations"]["runbook"].split("#")[1]
        assert f"## {rule['alert'].lower()}" in runbook, anchor


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (Debian prometheus)")
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    folder = DEPLOY / "prometheus"
    check = subprocess.run(
        ["promtool", "check", "rules", "alerts.yml"], cwd=folder, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        ["promtool", "test", "rules", "alerts_test.yml"], cwd=folder, capture_output=True, text=True
    )
    assert test.returncode == 0, test.stdout + test.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs Debian prometheus")
def test_real_prometheus_scrapes_the_service_under_traffic(
    bundle_dir: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    service_port, prometheus_port = _free_port(), _free_port()
    env = {**os.environ, "APD_MODEL": str(bundle_dir), "APD_SERVER__PORT": str(service_port)}
    service = subprocess.Popen(
        [sys.executable, "-m", "ai_photo_detector.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{DEPLOY / 'prometheus' / 'alerts.yml'}]\n"
        "scrape_configs:\n"
        "  - job_name: ai-photo-detector\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{service_port}']}}]\n"
    )
    prometheus = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(f"http://127.0.0.1:{service_port}/v2/health/ready")
        _wait(f"http://127.0.0.1:{prometheus_port}/-/ready")
        images = sorted((tiny_dataset / "ai").iterdir())[:10]
        for image in images:
            response = httpx.post(
                f"http://127.0.0.1:{service_port}/v1/predict", content=image.read_bytes()
            )
            assert response.status_code == 200
        query = 'sum(apd_http_requests_total{route="/v1/predict",status="200"})'
        deadline = time.monotonic() + 60
        value = 0.0
        while time.monotonic() < deadline and value < len(images):
            answer = httpx.get(
                f"http://127.0.0.1:{prometheus_port}/api/v1/query", params={"query": query}
            ).json()
            result = answer["data"]["result"]
            value = float(result[0]["value"][1]) if result else 0.0
            time.sleep(0.5)
        assert value == len(images)
        up = httpx.get(
            f"http://127.0.0.1:{prometheus_port}/api/v1/query",
            params={"query": 'up{job="ai-photo-detector"}'},
        ).json()
        assert up["data"]["result"][0]["value"][1] == "1"
        rules = httpx.get(f"http://127.0.0.1:{prometheus_port}/api/v1/rules").json()
        assert len(rules["data"]["groups"][0]["rules"]) == 10
    finally:
        for process in (prometheus, service):
            process.terminate()
            process.wait(timeout=30)
