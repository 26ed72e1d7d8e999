"""deploy/jobs/dataset: the Indexed Job runs one shard per completion index against the
orchestrator Service, with arguments the real CLI accepts and a spec that validates."""

from __future__ import annotations

from typing import Any

import yaml

from fetalflex.cli import build_parser
from fetalflex.dataset.plan import parse_shard, plan
from fetalflex.dataset.spec import parse_spec
from tests.deploy.test_manifests import DEPLOY, render, render_path

INDEX_ANNOTATION = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def _docs() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in render_path(DEPLOY / "jobs" / "dataset")}


def _args(container: dict[str, Any], index: int) -> list[str]:
    """The container's args as kubelet expands them for completion ``index``."""
    env = {e["name"]: e for e in container["env"]}
    assert env["SHARD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == INDEX_ANNOTATION
    return [a.replace("$(SHARD_INDEX)", str(index)) for a in container["args"]]


def test_one_shard_per_completion_index() -> None:
    job = _docs()["Job"]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["parallelism"] <= spec["completions"]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # required by backoffLimitPerIndex
    (c,) = pod["containers"]
    n = spec["completions"]
    shards = []
    for i in range(n):
        args = build_parser().parse_args(_args(c, i))
        assert args.command == "dataset" and args.dataset_command == "run"
        shards.append(parse_shard(args.shard))
    assert shards == [(i, n) for i in range(n)]  # every index, the same N as completions


def test_the_job_reaches_the_service_with_its_own_certificate() -> None:
    docs = _docs()
    pod = docs["Job"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    args = build_parser().parse_args(_args(c, 0))
    svc = next(d for d in render("cpu-embedded") if d["kind"] == "Service")
    grpc_port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc")
    assert args.target == f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc:" \
                          f"{grpc_port}"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    for path in (args.ca, args.cert, args.key):
        assert path.startswith(mounts["tls"] + "/")
    assert vols["tls"]["secret"]["secretName"] == "fetalflex-dataset-client-tls"
    # The orchestrator's NetworkPolicy admits the Job's namespace to the API port.
    ns = docs["Namespace"]
    policy = next(d for d in render("cpu-embedded") if d["kind"] == "NetworkPolicy")
    rule = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == grpc_port)
    wanted = rule["from"][0]["namespaceSelector"]["matchLabels"]
    assert wanted.items() <= ns["metadata"]["labels"].items()
    assert docs["Job"]["metadata"]["namespace"] == ns["metadata"]["name"]


def test_spec_and_output_volume() -> None:
    docs = _docs()
    pod = docs["Job"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    args = build_parser().parse_args(_args(c, 0))
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    cm = docs["ConfigMap"]
    assert vols["spec"]["configMap"]["name"] == cm["metadata"]["name"]
    assert args.spec == f"{mounts['spec']}/spec.yaml"
    spec = parse_spec(yaml.safe_load(cm["data"]["spec.yaml"]))
    assert len(plan(spec)) >= docs["Job"]["spec"]["completions"]
    # Every shard writes into one shared volume: the last to finish assembles the data set.
    assert args.out.startswith(mounts["data"] + "/")
    assert vols["data"]["persistentVolumeClaim"]["claimName"] == \
        docs["PersistentVolumeClaim"]["metadata"]["name"]
    assert docs["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_pod_policies() -> None:
    pod = _docs()["Job"]["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"] and not sc.get("privileged", False)
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert "nvidia.com/gpu" not in c["resources"]["limits"]  # a client: no GPU
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert "/tmp" in mounts and env["MPLCONFIGDIR"].startswith("/tmp/")  # read-only root
