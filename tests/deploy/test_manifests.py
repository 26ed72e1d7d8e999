"""Static checks of deploy/: kustomize renders, schemas, policies, Prometheus rules."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("cpu-embedded", "gpu-triton")
JOBS = ("jobs/dataset",)  # batch Jobs; tests/deploy/test_dataset_job.py checks their pods
K8S_VERSION = "1.30.0"
# Custom resources have no schema in kubernetes-validate; checked by hand below instead.
SKIPPED_KINDS = {"PodMonitor": "monitoring.coreos.com CRD (prometheus-operator): fields "
                               "checked in test_podmonitors"}


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed (.ci/run installs it)")
    return path


def render(overlay: str) -> list[dict[str, Any]]:
    return render_path(DEPLOY / "overlays" / overlay)


def render_path(kustomization: Path) -> list[dict[str, Any]]:
    out = subprocess.run([_need("kubectl"), "kustomize", str(kustomization)],
                         check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.parametrize("job", JOBS)
def test_job_renders_and_validates(job: str) -> None:
    for d in render_path(DEPLOY / job):
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates(overlay: str) -> None:
    docs = render(overlay)
    kinds = sorted(d["kind"] for d in docs)
    assert "Deployment" in kinds and "HorizontalPodAutoscaler" in kinds
    for d in docs:
        if d["kind"] in SKIPPED_KINDS:
            continue
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        assert d["metadata"].get("namespace", "fetalflex") == "fetalflex" or \
            d["kind"] == "Namespace"


def _pods(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(d["metadata"]["name"], d["spec"]["template"]["spec"])
            for d in docs if d["kind"] == "Deployment"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_policies(overlay: str) -> None:
    docs = render(overlay)
    for name, pod in _pods(docs):
        psc = pod.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True, name
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        assert pod.get("automountServiceAccountToken") is False, name
        for c in pod["containers"]:
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, (name, c["name"])
            assert sc.get("privileged", False) is False
            assert sc.get("capabilities", {}).get("drop") == ["ALL"]
            assert sc.get("readOnlyRootFilesystem") is True
            assert "readinessProbe" in c and "livenessProbe" in c, (name, c["name"])
            res = c["resources"]
            assert res.get("requests") and res.get("limits"), (name, c["name"])
            gpu = "nvidia.com/gpu" in res["limits"]
            assert gpu == (name == "fetalflex-triton"), f"GPU only on Triton pods ({name})"
        if name == "fetalflex-orchestrator":
            settings = json.loads(next(d for d in docs if d["kind"] == "ConfigMap")
                                  ["data"]["settings.json"])
            from service.config import ServiceSettings

            ServiceSettings.model_validate(settings)  # every key known and valid
            # kubelet probes speak plaintext: they must ask the health-only port, not the
            # API port (mTLS); tests/deploy/test_probes.py runs them against a real server.
            (c,) = pod["containers"]
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert c[kind]["grpc"]["port"] == settings["health_port"] != settings["port"]
            assert pod["terminationGracePeriodSeconds"] > settings["grace_s"]
            assert settings["backend"] == ("triton" if overlay == "gpu-triton" else "embedded")


def test_podmonitors() -> None:
    for d in render("gpu-triton"):
        if d["kind"] == "PodMonitor":
            assert d["apiVersion"] == "monitoring.coreos.com/v1"
            ep = d["spec"]["podMetricsEndpoints"][0]
            assert ep["port"] == "metrics" and re.fullmatch(r"\d+s", ep["interval"])


def test_networkpolicy_only_labelled_clients_reach_grpc() -> None:
    np_ = next(d for d in render("cpu-embedded") if d["kind"] == "NetworkPolicy")
    grpc_rule = next(r for r in np_["spec"]["ingress"] if r["ports"][0]["port"] == 50051)
    assert grpc_rule["from"] == [{"namespaceSelector": {"matchLabels": {
        "fetalflex.io/client": "true"}}}]


def test_promtool_check_and_unit_tests() -> None:
    promtool = _need("promtool")
    subprocess.run([promtool, "check", "rules", str(DEPLOY / "prometheus" / "rules.yaml")],
                   check=True, capture_output=True)
    res = subprocess.run([promtool, "test", "rules", "rules_test.yaml"], capture_output=True,
                         text=True, cwd=DEPLOY / "prometheus")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_dashboard_and_rules_use_declared_metrics() -> None:
    from service import metrics

    declared = set()
    for obj in vars(metrics).values():
        name = getattr(obj, "_name", None)
        if isinstance(name, str):
            declared.add(name)
    text = (DEPLOY / "grafana" / "fetalflex-dashboard.json").read_text() + \
        (DEPLOY / "prometheus" / "rules.yaml").read_text()
    used = set(re.findall(r"\b(fetalflex_[a-z_]+?)(?:_bucket|_count|_sum|_total)?\b", text))
    unknown = {u for u in used if not any(u.startswith(d) or d.startswith(u)
                                          for d in declared)}
    assert not unknown, f"metrics not declared in service/metrics.py: {unknown}"
    dash = json.loads((DEPLOY / "grafana" / "fetalflex-dashboard.json").read_text())
    assert len(dash["panels"]) >= 6
