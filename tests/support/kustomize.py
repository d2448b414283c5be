"""Render the kustomizations under ``deploy/k8s``, alone or combined with components, for the deploy tests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.support.broker import REPO
from tests.support.tools import require_tool

K8S = REPO / "deploy" / "k8s"


def build(directory: Path) -> list[dict[str, Any]]:
    """``kustomize build directory`` as a list of objects."""
    result = subprocess.run(
        [require_tool("kustomize"), "build", str(directory)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render(target: str) -> list[dict[str, Any]]:
    """One kustomization of ``deploy/k8s`` (``"overlays/prod"``)."""
    return build(K8S / target)


def render_with(
    directory: Path,
    resources: list[str],
    components: Sequence[str] = (),
    patches: Sequence[dict[str, Any]] = (),
    root: Path = K8S,
) -> list[dict[str, Any]]:
    """A kustomization written in ``directory`` that combines targets of ``root`` with components.

    This is how a user takes a component: their own kustomization over ours. kustomize accepts
    only relative paths there, so they are made relative to ``directory``.
    """
    directory.mkdir(parents=True, exist_ok=True)

    def rel(target: str) -> str:
        return os.path.relpath(root / target, directory)

    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [rel(r) for r in resources],
        "components": [rel(c) for c in components],
        "patches": list(patches),
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return build(directory)


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


def worker_config(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The data of the worker's (generated, hash-suffixed) ConfigMap."""
    configs = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("ecg-worker-config")
    ]
    assert len(configs) == 1, [c["metadata"]["name"] for c in configs]
    return configs[0]["data"]
