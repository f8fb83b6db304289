"""The Kubernetes manifests validate strictly, offline, and wire every service's probes and metrics port."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate  # noqa: F401  (the validator must be installed: it is a test dependency)
import pytest
import yaml

from shared.credentials import PRINCIPALS, names_a_user, read_password
from shared.errors import ConfigurationError
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


def test_each_service_mounts_only_its_own_credentials_and_setup_mounts_them_all() -> None:
    docs = [d for d in yaml.safe_load_all((K8S / "services.yaml").read_text()) if d]
    for d in (d for d in docs if d["kind"] == "Deployment"):
        name = d["metadata"]["name"].removeprefix("obsflow-")
        secrets = [v["secret"]["secretName"] for v in d["spec"]["template"]["spec"]["volumes"]
                   if "secret" in v and v["secret"]["secretName"].startswith("obsflow-credentials-")]
        assert secrets == [f"obsflow-credentials-{name}"]
    job = yaml.safe_load((K8S / "setup.yaml").read_text())
    projected = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "credentials")
    mounted = {s["secret"]["name"] for s in projected["projected"]["sources"]}
    assert mounted == {f"obsflow-credentials-{p}" for p in PRINCIPALS}
    config = yaml.safe_load_all((K8S / "settings.yaml").read_text())
    data = next(d for d in config if d["kind"] == "ConfigMap")["data"]
    assert not names_a_user(data["OBSFLOW_DATABASE_URL"]) and not names_a_user(data["OBSFLOW_AMQP_URL"])


def test_the_shipped_credentials_are_placeholders_obsflow_refuses(tmp_path: Path) -> None:
    secrets = [d for d in yaml.safe_load_all((K8S / "credentials.yaml").read_text()) if d]
    settings = Settings(credentials_dir=tmp_path)
    for secret in (s for s in secrets if s["metadata"]["name"].startswith("obsflow-credentials-")):
        for key, value in secret["stringData"].items():
            (tmp_path / key).write_text(value)
            principal, system = key.split(".")[0], key.split(".")[1].removesuffix("-password")
            with pytest.raises(ConfigurationError, match="placeholder"):
                read_password(settings, principal, system)  # type: ignore[arg-type]
