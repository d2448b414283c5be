"""Every kustomization and component renders, validates against its schemas, and agrees with the worker."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from ecg_anomaly.base.acls import worker_acls
from ecg_anomaly.cli import command_parser
from ecg_anomaly.worker.options import ALL_OPTIONS
from tests.support.broker import REPO
from tests.support.crds import crd_schemas, validate_custom
from tests.support.kustomize import K8S, one, render, render_with, worker_config

KUBERNETES_VERSION = "1.31.0"
WORKER_ENV = {option.env for option in ALL_OPTIONS} | {"ECG_KAFKA_SASL_PASSWORD", "ECG_KAFKA_SSL_PASSWORD"}
# What a user applies as it is: the overlays, the training Job, the cluster's monitoring, the topics.
TARGETS = ["base", "overlays/dev", "overlays/prod", "training", "monitoring", "kafka-topics"]
# Each component on top of what it is made for, as a user's own kustomization would take it.
VARIANTS: dict[str, tuple[list[str], list[str]]] = {
    "prod+hpa-cpu": (["overlays/prod"], ["components/hpa-cpu"]),
    "prod+strimzi-topics": (["overlays/prod"], ["components/strimzi-topics"]),
    "prod+strimzi-user": (["overlays/prod"], ["components/strimzi-topics", "components/strimzi-user"]),
    "base+monitoring+kube-prometheus-stack": (["base", "monitoring"], ["components/kube-prometheus-stack"]),
}
WORKLOADS = [
    "base",
    "overlays/dev",
    "overlays/prod",
    "prod+hpa-cpu",
    "prod+strimzi-topics",
    "prod+strimzi-user",
]
RELEASE_PATCH = {
    "target": {"group": "monitoring.coreos.com", "kind": "ServiceMonitor|PrometheusRule"},
    "patch": "- {op: replace, path: /metadata/labels/release, value: prometheus}",
}


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Every target and variant, rendered once for the module."""
    rendered = {target: render(target) for target in TARGETS}
    for name, (resources, components) in VARIANTS.items():
        rendered[name] = render_with(tmp_path_factory.mktemp(name.replace("+", "-")), resources, components)
    return rendered


@pytest.mark.parametrize("name", TARGETS + list(VARIANTS))
def test_every_object_validates_against_its_schema(variants: dict, name: str) -> None:
    """Built-in kinds against Kubernetes' schemas; custom resources against their project's CRD."""
    objects = variants[name]
    assert objects
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in crd_schemas():
            assert validate_custom(obj, KUBERNETES_VERSION) == [], (obj["kind"], obj["metadata"]["name"])
        else:  # an unknown custom kind raises here too: every CRD our manifests use is vendored
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_crd_validation_refuses_what_the_api_server_would() -> None:
    scaled = one(render("base"), "ScaledObject")
    assert validate_custom(scaled, KUBERNETES_VERSION) == []
    wrong = {**scaled, "spec": {**scaled["spec"], "maxReplicas": 6}}  # the HPA's name, not KEDA's
    assert any("maxReplicas" in e for e in validate_custom(wrong, KUBERNETES_VERSION))
    mislabelled = {**scaled, "metadata": {**scaled["metadata"], "labels": {"release": 1}}}
    assert validate_custom(mislabelled, KUBERNETES_VERSION)


@pytest.mark.parametrize("name", WORKLOADS)
def test_worker_deployment_is_restricted_probed_and_drains(variants: dict, name: str) -> None:
    objects = variants[name]
    deployment = one(objects, "Deployment")
    config = worker_config(objects)
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
    # Surge first (tests/test_rollout.py runs this sequence against a real broker).
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    # The model the worker loads is the one the init container copies into the shared volume.
    assert config["ECG_MODEL"].startswith("/models/")
    # Every setting the manifests pass is one the worker reads.
    env_names = set(config) | {e["name"] for e in worker.get("env", [])}
    assert env_names <= WORKER_ENV, env_names - WORKER_ENV


@pytest.mark.parametrize("name", [*WORKLOADS, "training"])
def test_pods_get_no_service_link_variables(variants: dict, name: str) -> None:
    """A Service named kafka in the namespace would set KAFKA_PORT=tcp://... in every pod."""
    for obj in variants[name]:
        if obj["kind"] in {"Deployment", "Job"}:
            assert obj["spec"]["template"]["spec"]["enableServiceLinks"] is False, obj["metadata"]["name"]


@pytest.mark.parametrize("name", WORKLOADS)
def test_the_autoscaler_alone_sets_the_replica_count(variants: dict, name: str) -> None:
    """A replicas field would reset the autoscaled count on every apply (and force a rebalance)."""
    objects = variants[name]
    deployment = one(objects, "Deployment")
    assert "replicas" not in deployment["spec"]
    scalers = [o for o in objects if o["kind"] in {"ScaledObject", "HorizontalPodAutoscaler"}]
    assert len(scalers) == 1
    assert scalers[0]["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


@pytest.mark.parametrize("name", WORKLOADS)
def test_the_config_map_is_named_by_its_content(variants: dict, name: str) -> None:
    objects = variants[name]
    config = next(o for o in objects if o["metadata"]["name"].startswith("ecg-worker-config"))
    assert config["metadata"]["name"] != "ecg-worker-config"  # hash-suffixed
    refs = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert refs == [{"configMapRef": {"name": config["metadata"]["name"]}}]


def test_a_config_change_rolls_the_pods(tmp_path: Path) -> None:
    """A changed setting changes the pod template (so the Deployment rolls), in the base and an overlay."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    targets = ["base", "overlays/dev"]
    before = {t: render_with(tmp_path / f"before-{i}", [t], root=copy) for i, t in enumerate(targets)}
    env = copy / "base" / "worker.env"
    env.write_text(env.read_text().replace("ECG_MAX_BATCH=1024", "ECG_MAX_BATCH=512"))
    for i, (target, objects) in enumerate(before.items()):
        after = render_with(tmp_path / f"after-{i}", [target], root=copy)
        assert worker_config(after)["ECG_MAX_BATCH"] == "512"
        old_pod = one(objects, "Deployment")["spec"]["template"]
        new_pod = one(after, "Deployment")["spec"]["template"]
        assert new_pod != old_pod, f"{target}: a config change leaves the pod template as it was"


@pytest.mark.parametrize("name", WORKLOADS)
def test_a_broker_outage_does_not_block_node_drains(variants: dict, name: str) -> None:
    pdb = one(variants[name], "PodDisruptionBudget")
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("name", ["overlays/dev", "overlays/prod"])
def test_namespaces_enforce_warn_and_audit_restricted(variants: dict, name: str) -> None:
    """Enforce applies to pods only; warn shows a Deployment's violations at apply time, audit logs them."""
    labels = one(variants[name], "Namespace")["metadata"]["labels"]
    for mode in ("enforce", "warn", "audit"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted", mode


@pytest.mark.parametrize("name", ["base", "overlays/dev", "overlays/prod"])
def test_metrics_are_scraped_and_network_is_closed(variants: dict, name: str) -> None:
    objects = variants[name]
    service = one(objects, "Service")
    monitor = one(objects, "ServiceMonitor")
    policy = one(objects, "NetworkPolicy")
    config = worker_config(objects)
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    ingress_ports = [p["port"] for r in policy["spec"]["ingress"] for p in r["ports"]]
    assert ingress_ports == [int(config["ECG_HTTP_PORT"])]
    egress_ports = {p["port"] for r in policy["spec"]["egress"] for p in r["ports"]}
    assert 53 in egress_ports
    broker_port = int(config["ECG_BOOTSTRAP_SERVERS"].rsplit(":", 1)[1])
    assert broker_port in egress_ports


@pytest.mark.parametrize("name", ["base", "overlays/dev", "overlays/prod"])
def test_alerts_and_dashboard_are_not_deployed_per_namespace(variants: dict, name: str) -> None:
    """They aggregate every namespace: a copy per namespace would record each series twice."""
    kinds = {(o["kind"], o["metadata"]["name"]) for o in variants[name]}
    assert not {k for k in kinds if k[0] == "PrometheusRule" or k[1] == "ecg-anomaly-dashboard"}
    monitoring = {(o["kind"], o["metadata"]["name"]) for o in variants["monitoring"]}
    assert {("PrometheusRule", "ecg-anomaly"), ("ConfigMap", "ecg-anomaly-dashboard")} <= monitoring


def test_kube_prometheus_stack_selects_the_monitor_and_the_rules(variants: dict, tmp_path: Path) -> None:
    """Its Prometheus selects ServiceMonitors and PrometheusRules by release=<Helm release name>."""
    selected = {"ServiceMonitor", "PrometheusRule"}

    def releases(objects: list[dict[str, Any]]) -> dict[str, str | None]:
        return {o["kind"]: o["metadata"]["labels"].get("release") for o in objects if o["kind"] in selected}

    assert releases(render_with(tmp_path / "plain", ["base"])) == {"ServiceMonitor": None}
    labelled = releases(variants["base+monitoring+kube-prometheus-stack"])
    assert labelled == {"ServiceMonitor": "kube-prometheus-stack", "PrometheusRule": "kube-prometheus-stack"}
    # Another release name: the patch docs/kubernetes.md shows, after the component.
    renamed = render_with(
        tmp_path / "renamed", ["base", "monitoring"], ["components/kube-prometheus-stack"], [RELEASE_PATCH]
    )
    assert releases(renamed) == {"ServiceMonitor": "prometheus", "PrometheusRule": "prometheus"}
    assert RELEASE_PATCH["patch"] in (REPO / "docs" / "kubernetes.md").read_text()
    # The overlays and the monitoring kustomization take the component.
    for name in ("overlays/dev", "overlays/prod", "monitoring"):
        assert set(releases(variants[name]).values()) == {"kube-prometheus-stack"}, name


@pytest.mark.parametrize("name", ["base", "overlays/prod", "prod+strimzi-topics"])
def test_keda_scales_the_worker_on_its_own_group_lag(variants: dict, name: str) -> None:
    objects = variants[name]
    scaled = one(objects, "ScaledObject")
    deployment = one(objects, "Deployment")
    config = worker_config(objects)
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


@pytest.mark.parametrize("name", ["overlays/dev", "prod+hpa-cpu"])
def test_without_keda_a_cpu_hpa_and_no_keda_object(variants: dict, name: str) -> None:
    """Without KEDA's CRDs the API server refuses any keda.sh object, and with it the whole apply."""
    objects = variants[name]
    assert not [o["kind"] for o in objects if o["apiVersion"].startswith("keda.sh/")]
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(objects, "Deployment")["metadata"]["name"]


def test_strimzi_topics_are_the_workers_and_bound_its_scaling(variants: dict) -> None:
    objects = variants["prod+strimzi-topics"]
    config = worker_config(objects)
    topics = {
        t["spec"].get("topicName", t["metadata"]["name"]): t for t in objects if t["kind"] == "KafkaTopic"
    }
    named = {config[f"ECG_{role}_TOPIC"] for role in ("INPUT", "ANOMALY", "DLQ", "SCORES")}
    assert named - {""} <= topics.keys()
    for topic in topics.values():
        assert topic["metadata"]["labels"]["strimzi.io/cluster"]
        assert int(topic["spec"]["config"]["min.insync.replicas"]) < topic["spec"]["replicas"]
    # KEDA caps the worker at the partition count; a cap above it would only add idle members.
    scaled = one(objects, "ScaledObject")
    assert scaled["spec"]["maxReplicaCount"] == topics[config["ECG_INPUT_TOPIC"]]["spec"]["partitions"]
    base_cap = one(variants["base"], "ScaledObject")["spec"]["maxReplicaCount"]
    assert base_cap <= topics["ecg.beats"]["spec"]["partitions"]
    # The topics kustomization puts them where Strimzi's Topic Operator looks by default.
    assert {t["metadata"]["namespace"] for t in variants["kafka-topics"]} == {"kafka"}


def test_topics_command_plans_what_the_strimzi_component_declares(variants: dict) -> None:
    from ecg_anomaly.tools.topics import default_plan

    declared = {
        t["metadata"]["name"]: (
            t["spec"]["partitions"],
            t["spec"]["replicas"],
            {k: str(v) for k, v in t["spec"]["config"].items()},
        )
        for t in variants["kafka-topics"]
    }
    planned = {t.name: (t.partitions, t.replication_factor, t.config) for t in default_plan()}
    assert planned == declared


def test_training_job_writes_to_the_model_store(variants: dict) -> None:
    objects = variants["training"]
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


def test_the_strimzi_user_grants_exactly_the_workers_least_privilege_acls(variants: dict) -> None:
    """The KafkaUser's ACLs are base/acls' worker_acls for the settings the overlay gives the worker
    (the ACLs the secured-broker tests prove), and it authenticates with the overlay's mechanism."""
    objects = variants["prod+strimzi-user"]
    env, user = worker_config(objects), one(objects, "KafkaUser")
    names = [env.get(f"ECG_{n}_TOPIC", "") for n in ("INPUT", "ANOMALY", "SCORES", "DLQ")]
    # the episode topics whether or not the overlay turns episodes on: turning them on needs no new ACL
    alerts = env.get("ECG_ALERTS_TOPIC", "ecg.alerts")
    changelog = env.get("ECG_EPISODE_CHANGELOG_TOPIC") or f"{env['ECG_GROUP_ID']}-episodes-changelog"
    expected = worker_acls(
        *names, env["ECG_GROUP_ID"], env["ECG_GUARANTEE"] == "exactly-once", alerts, changelog
    )
    assert user["spec"]["authorization"] == {"type": "simple", "acls": [acl.strimzi() for acl in expected]}
    assert user["spec"]["authentication"]["type"] == env["ECG_KAFKA_SASL_MECHANISM"].lower()
    topics = {t["metadata"]["name"] for t in objects if t["kind"] == "KafkaTopic"}
    assert {n for n in names if n} | {alerts, changelog} <= topics


def test_with_strimzi_the_worker_and_keda_read_the_secrets_strimzi_creates(variants: dict) -> None:
    """``<KafkaUser name>`` (key ``password``) from the User Operator, ``<cluster>-cluster-ca-cert``
    (key ``ca.crt``) from the Cluster Operator, at the files the worker is configured to read."""
    objects = variants["prod+strimzi-user"]
    env, user = worker_config(objects), one(objects, "KafkaUser")
    user_secret = user["metadata"]["name"]
    ca_secret = f"{user['metadata']['labels']['strimzi.io/cluster']}-cluster-ca-cert"
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    files = {
        f"{mounts[v['name']]}/{item['path']}": (v["secret"]["secretName"], item["key"])
        for v in pod["volumes"]
        if "secret" in v
        for item in v["secret"]["items"]
    }
    assert files[env["ECG_KAFKA_SASL_PASSWORD_FILE"]] == (user_secret, "password")
    assert files[env["ECG_KAFKA_SSL_CAFILE"]] == (ca_secret, "ca.crt")
    variables = {e["name"]: e for e in container["env"]}
    assert "ECG_KAFKA_SASL_PASSWORD" not in variables
    name_ref = variables["ECG_KAFKA_SASL_USERNAME"]["valueFrom"]["configMapKeyRef"]
    names = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name_ref["name"]]
    assert names[0]["data"][name_ref["key"]] == user_secret  # the user name is the KafkaUser's name

    auth = one(objects, "TriggerAuthentication")["spec"]
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["secretTargetRef"]}
    assert refs["password"] == (user_secret, "password") and refs["ca"] == (ca_secret, "ca.crt")
    assert auth["configMapTargetRef"] == [{"parameter": "username", **name_ref}]
