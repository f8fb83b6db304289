"""The Kubernetes manifests validate strictly, offline, and wire every service's probes and metrics port."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate  # noqa: F401  (the validator must be installed: it is a test dependency)
import yaml

from shared.settings import SERVICES, Settings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"


def test_manifests_validate_strictly() -> None:
    files = sorted(str(p) for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", *files],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_service_deployed_with_probes_on_its_port() -> None:
    docs = [d for d in yaml.safe_load_all((K8S / "services.yaml").read_text()) if d]
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {f"obsflow-{name}" for name in SERVICES}
    settings = Settings()
    for name in SERVICES:
        pod = deployments[f"obsflow-{name}"]["spec"]["template"]
        container = pod["spec"]["containers"][0]
        assert container["args"] == ["service", name]
        assert container["ports"][0]["containerPort"] == settings.http_port(name)
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(settings.http_port(name))
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
