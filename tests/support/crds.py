"""Custom resources checked against their projects' own CRD schemas (vendored in ``tests/crds``).

kubernetes-validate knows only built-in kinds. A CRD's ``openAPIV3Schema`` is close to a JSON Schema;
the API server additionally refuses fields a structural schema does not list (strict field
validation, ``kubectl apply``'s default), so objects that list their properties are closed here.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from tests.support.broker import REPO

CRDS = REPO / "tests" / "crds"


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """``(apiVersion, kind)`` → the closed schema of every served version of every vendored CRD."""
    schemas = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version["served"]:
                schema = closed(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def closed(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with unknown fields refused wherever the CRD lists the fields (in place)."""
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        schema["additionalProperties"] = False
    for child in schema.get("properties", {}).values():
        closed(child)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            closed(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        for child in schema.get(key, []):
            closed(child)
    return schema


def validate_custom(obj: dict[str, Any], kubernetes_version: str) -> list[str]:
    """Every way ``obj`` breaks its CRD's schema (empty when it is valid)."""
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    schema = crd_schemas().get(key)
    if schema is None:
        return [f"no vendored CRD serves {key[0]} {key[1]} (tests/crds)"]
    validator = jsonschema.Draft7Validator(schema)
    errors = [
        f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in validator.iter_errors(obj)
    ]
    # metadata is `type: object` in a CRD; the API server checks it as the built-in ObjectMeta.
    holder = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj.get("metadata", {})}
    try:
        kubernetes_validate.validate(holder, kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        errors.append(f"metadata: {exc.message}")
    return errors
