"""Alerts, dashboard and a running worker agree: every metric they read is one the worker exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.support.artifact import build_small_artifact, load_test_split
from tests.support.broker import REPO
from tests.support.tools import require_tool
from tests.support.worker import produce_beats, produce_raw, wait_for

RULE = REPO / "deploy" / "k8s" / "monitoring" / "prometheusrule.yaml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "ecg-anomaly.rules.test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "ecg-anomaly-dashboard.json"
OPERATING = REPO / "docs" / "operating.md"
RUNBOOKS = "https://github.com/ecg-anomaly/ecg-anomaly/blob/main/docs/operating.md#"
METRIC = re.compile(r"\b(ecg_[a-z0-9_]+)")
# An aggregation and its optional `by (...)` clause (written before the operand, as ours are).
AGGREGATION = re.compile(
    r"\b(sum|min|max|avg|count|group|stddev|stdvar|topk|bottomk|quantile|count_values)\b"
    r"\s*(?:(by|without)\s*\(([^)]*)\))?\s*\("
)
SERIES = re.compile(r"\b(ecg[_:][a-z0-9_:]+)(\{[^}]*\})?")


def rule_groups() -> dict:
    return yaml.safe_load(RULE.read_text())["spec"]


def rule_exprs() -> list[str]:
    return [rule["expr"] for group in rule_groups()["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """The PrometheusRule's spec as a plain rules file, beside the promtool unit tests."""
    (tmp_path / "ecg-anomaly.rules.yml").write_text(yaml.safe_dump(rule_groups()))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    return tmp_path


def test_promtool_checks_the_rules(rules_dir: Path) -> None:
    result = subprocess.run(
        [require_tool("promtool"), "check", "rules", "ecg-anomaly.rules.yml"],
        cwd=rules_dir,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_every_alert(rules_dir: Path) -> None:
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    names = {r["alert"] for r in alerts()}
    assert names <= tested, f"alerts without a promtool test: {names - tested}"
    result = subprocess.run(
        [require_tool("promtool"), "test", "rules", RULE_TESTS.name],
        cwd=rules_dir,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def alerts() -> list[dict]:
    return [r for g in rule_groups()["groups"] for r in g["rules"] if "alert" in r]


def dropped_namespace(expr: str) -> list[str]:
    """The aggregations in ``expr`` that add namespaces together (no ``by (namespace, ...)``)."""
    found = []
    for match in AGGREGATION.finditer(expr):
        _, clause, labels = match.groups()
        kept = {label.strip() for label in (labels or "").split(",")}
        if clause != "by" or "namespace" not in kept:
            found.append(match.group(0))
    return found


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_aggregation_keeps_the_namespace(source: str) -> None:
    """dev and prod are judged apart: no sum, count or max adds one namespace to another."""
    exprs = rule_exprs() if source == "rules" else dashboard_exprs()
    offending = {expr: dropped_namespace(expr) for expr in exprs if dropped_namespace(expr)}
    assert not offending, offending
    assert dropped_namespace("sum(rate(x[5m])) / sum by (namespace, le) (y)") == ["sum("]  # the check bites


def test_the_dashboard_shows_one_namespace_at_a_time() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert "label_values(" in variables["namespace"]["definition"]
    assert "namespace" in variables["namespace"]["definition"]
    for expr in dashboard_exprs():
        for name, selector in SERIES.findall(expr):
            assert 'namespace=~"$namespace"' in selector, f"{name} in {expr!r} is not filtered by $namespace"


def test_every_alert_has_a_runbook_in_the_operating_docs() -> None:
    headings = re.findall(r"^#+ (.+)$", OPERATING.read_text(), re.M)
    anchors = {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-") for h in headings}
    for alert in alerts():
        url = alert["annotations"].get("runbook_url", "")
        assert url.startswith(RUNBOOKS), f"{alert['alert']}: runbook_url {url!r}"
        assert url.removeprefix(RUNBOOKS) in anchors, f"{alert['alert']}: no section #{url.split('#')[-1]}"


def test_dashboard_panels_query_known_series() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["panels"]
    recorded = {r["record"] for g in rule_groups()["groups"] for r in g["rules"] if "record" in r}
    for expr in dashboard_exprs():
        for name in re.findall(r"\b(ecg:[a-z0-9_:]+)", expr):
            assert name in recorded, f"dashboard uses {name}, which no recording rule defines"


@pytest.mark.kafka
def test_a_running_worker_exports_every_metric_alerts_and_dashboard_read(
    kafka_bootstrap: str, topic_factory: Callable[..., str], worker_factory, tmp_path: Path
) -> None:
    model = build_small_artifact(tmp_path / "model")
    beats_topic = topic_factory(partitions=2, prefix="beats")
    worker = worker_factory(model, beats_topic, scores_topic="")
    try:
        worker.wait_ready()
        beats, labels = load_test_split()
        produce_beats(kafka_bootstrap, beats_topic, beats[:200], labels=labels[:200])
        produce_raw(kafka_bootstrap, beats_topic, [(b"bad-source", b"{not json", [])])
        wait_for(lambda: worker.metrics().get("ecg_beats_consumed_total", 0) >= 201, 60, "201 beats consumed")
        with urllib.request.urlopen(worker.url("/metrics"), timeout=5) as response:
            scrape = response.read()
    finally:
        worker.stop()

    lint = subprocess.run([require_tool("promtool"), "check", "metrics"], input=scrape, capture_output=True)
    assert lint.returncode == 0, (lint.stdout + lint.stderr).decode()

    exported = {line.split("{")[0].split(" ")[0] for line in scrape.decode().splitlines() if line[:1] != "#"}
    used = {name for expr in rule_exprs() + dashboard_exprs() for name in METRIC.findall(expr)}
    assert used, "no ecg_ metric found in the alerts or the dashboard"
    assert used <= exported, f"read by alerts or dashboard but not exported: {sorted(used - exported)}"
