"""The Strimzi component of the worker's Kafka user: the ACLs the tests prove, and the Secrets Strimzi makes.

``deploy/k8s/components/strimzi-user`` is taken over the production overlay, as a user does; its
``KafkaUser`` must grant exactly :func:`ecg_anomaly.base.acls.worker_acls` for the settings that
overlay gives the worker, and the worker and KEDA must read the Secrets the Strimzi operators create:
``<KafkaUser name>`` (key ``password``) and ``<cluster>-cluster-ca-cert`` (key ``ca.crt``).
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest
import yaml

from ecg_anomaly.base.acls import worker_acls
from tests.support.broker import REPO
from tests.support.tools import require_tool

K8S = REPO / "deploy" / "k8s"


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The production overlay with the component, in a kustomization of the user's own."""
    directory = tmp_path_factory.mktemp("prod-strimzi-user")
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / "overlays" / "prod", directory)],
        "components": [os.path.relpath(K8S / "components" / "strimzi-user", directory)],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    built = subprocess.run(
        [require_tool("kustomize"), "build", str(directory)], capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


def _one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, (kind, name, [o["metadata"]["name"] for o in found])
    return found[0]


def _worker_settings(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The worker's ECG_* settings as the overlay gives them (its ConfigMap)."""
    configs = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("ecg-worker")
    ]
    assert len(configs) == 1
    return configs[0]["data"]


def test_the_kafka_user_grants_exactly_the_workers_least_privilege_acls(
    objects: list[dict[str, Any]],
) -> None:
    env = _worker_settings(objects)
    user = _one(objects, "KafkaUser")
    expected = worker_acls(
        env.get("ECG_INPUT_TOPIC", "ecg.beats"),
        env.get("ECG_ANOMALY_TOPIC", "ecg.anomalies"),
        env.get("ECG_SCORES_TOPIC", ""),
        env.get("ECG_DLQ_TOPIC", "ecg.beats.dlq"),
        env.get("ECG_GROUP_ID", "ecg-worker"),
        env["ECG_GUARANTEE"] == "exactly-once",
    )
    assert user["spec"]["authorization"] == {"type": "simple", "acls": [acl.strimzi() for acl in expected]}
    assert user["spec"]["authentication"]["type"] == env["ECG_KAFKA_SASL_MECHANISM"].lower()


def test_the_worker_and_keda_read_the_secrets_strimzi_creates(objects: list[dict[str, Any]]) -> None:
    env = _worker_settings(objects)
    user = _one(objects, "KafkaUser")
    cluster = user["metadata"]["labels"]["strimzi.io/cluster"]
    user_secret, ca_secret = user["metadata"]["name"], f"{cluster}-cluster-ca-cert"
    pod = _one(objects, "Deployment")["spec"]["template"]["spec"]
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
    reference = variables["ECG_KAFKA_SASL_USERNAME"]["valueFrom"]["configMapKeyRef"]
    names = _one(objects, "ConfigMap", reference["name"])
    assert names["data"][reference["key"]] == user_secret  # the user name is the KafkaUser's name

    auth = _one(objects, "TriggerAuthentication")["spec"]
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["secretTargetRef"]}
    assert refs["password"] == (user_secret, "password")
    assert refs["ca"] == (ca_secret, "ca.crt")
    (username,) = auth["configMapTargetRef"]
    assert (username["parameter"], username["name"], username["key"]) == (
        "username",
        reference["name"],
        reference["key"],
    )
