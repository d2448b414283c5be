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
METRIC = re.compile(r"\b(ecg_[a-z0-9_]+)")


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
    alerts = {r["alert"] for g in rule_groups()["groups"] for r in g["rules"] if "alert" in r}
    assert alerts <= tested, f"alerts without a promtool test: {alerts - tested}"
    result = subprocess.run(
        [require_tool("promtool"), "test", "rules", RULE_TESTS.name],
        cwd=rules_dir,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


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
