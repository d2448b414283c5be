"""Every kustomize overlay renders, validates against the Kubernetes schemas, and agrees with the worker."""

from __future__ import annotations

import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ecg_anomaly.cli import command_parser
from ecg_anomaly.worker.options import ALL_OPTIONS
from tests.support.broker import REPO
from tests.support.tools import require_tool

K8S = REPO / "deploy" / "k8s"
OVERLAYS = ["base", "overlays/dev", "overlays/prod", "training"]
KUBERNETES_VERSION = "1.31.0"
# Custom resources have no schema in kubernetes-validate; they are checked against the objects they name.
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}
WORKER_ENV = {option.env for option in ALL_OPTIONS} | {"ECG_KAFKA_SASL_PASSWORD", "ECG_KAFKA_SSL_PASSWORD"}


def render(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [require_tool("kustomize"), "build", str(K8S / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(request.param)


def test_core_objects_validate_against_kubernetes_schemas(rendered: tuple[str, list]) -> None:
    _, objects = rendered
    core = [o for o in objects if o["kind"] not in CUSTOM_KINDS]
    assert core
    for obj in core:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", ["base", "overlays/dev", "overlays/prod"])
def test_worker_deployment_is_restricted_probed_and_drains(overlay: str) -> None:
    objects = render(overlay)
    deployment = one(objects, "Deployment")
    config = one([o for o in objects if o["metadata"]["name"].endswith("worker-config")], "ConfigMap")["data"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for container in pod["containers"] + pod.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "limits" in container["resources"] and "requests" in container["resources"]
    worker = next(c for c in pod["containers"] if c["name"] == "worker")
    port = int(config["ECG_HTTP_PORT"])
    assert worker["ports"][0]["containerPort"] == port
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["terminationGracePeriodSeconds"] > float(config["ECG_DRAIN_TIMEOUT"])
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # The model the worker loads is the one the init container copies into the shared volume.
    assert config["ECG_MODEL"].startswith("/models/")
    # Every setting the manifests pass is one the worker reads.
    env_names = set(config) | {e["name"] for e in worker.get("env", [])}
    assert env_names <= WORKER_ENV, env_names - WORKER_ENV


@pytest.mark.parametrize("overlay", ["base", "overlays/dev", "overlays/prod"])
def test_metrics_are_scraped_and_network_is_closed(overlay: str) -> None:
    objects = render(overlay)
    service = one(objects, "Service")
    monitor = one(objects, "ServiceMonitor")
    policy = one(objects, "NetworkPolicy")
    config = one([o for o in objects if o["metadata"]["name"].endswith("worker-config")], "ConfigMap")["data"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    ingress_ports = [p["port"] for r in policy["spec"]["ingress"] for p in r["ports"]]
    assert ingress_ports == [int(config["ECG_HTTP_PORT"])]
    egress_ports = {p["port"] for r in policy["spec"]["egress"] for p in r["ports"]}
    assert 53 in egress_ports
    broker_port = int(config["ECG_BOOTSTRAP_SERVERS"].rsplit(":", 1)[1])
    assert broker_port in egress_ports


@pytest.mark.parametrize("overlay", ["base", "overlays/prod"])
def test_keda_scales_the_worker_on_its_own_group_lag(overlay: str) -> None:
    objects = render(overlay)
    scaled = one(objects, "ScaledObject")
    deployment = one(objects, "Deployment")
    config = one([o for o in objects if o["metadata"]["name"].endswith("worker-config")], "ConfigMap")["data"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == config["ECG_GROUP_ID"]
    assert trigger["metadata"]["topic"] == config["ECG_INPUT_TOPIC"]
    assert trigger["metadata"]["bootstrapServers"] == config["ECG_BOOTSTRAP_SERVERS"]
    assert trigger["metadata"]["allowIdleConsumers"] == "false"  # never more consumers than partitions
    assert scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    if "authenticationRef" in trigger:
        auth = one(objects, "TriggerAuthentication")
        assert auth["metadata"]["name"] == trigger["authenticationRef"]["name"]
    assert not [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]  # KEDA owns the HPA


def test_dev_falls_back_to_a_cpu_hpa_without_keda() -> None:
    objects = render("overlays/dev")
    assert not [o for o in objects if o["kind"] == "ScaledObject"]
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(objects, "Deployment")["metadata"]["name"]


def test_training_job_writes_to_the_model_store() -> None:
    objects = render("training")
    job = one(objects, "Job")
    claim = one(objects, "PersistentVolumeClaim")
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    volumes = {v["name"]: v for v in pod["volumes"]}
    trainer = pod["containers"][0]
    store = next(m for m in trainer["volumeMounts"] if m["mountPath"] == "/store")
    assert volumes[store["name"]]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    args = command_parser("train").parse_args(trainer["args"])  # the trainer accepts these flags
    assert str(args.out_dir).startswith("/store/")
    assert trainer["securityContext"]["readOnlyRootFilesystem"] is True
