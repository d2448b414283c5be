"""The live page: ``watch --web`` against a real broker and worker, drawn in headless Chromium."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from kafka import TopicPartition
from kafka.admin import KafkaAdminClient

from ecg_anomaly.base.kafka import KafkaConnection
from ecg_anomaly.schemas import messages as m
from ecg_anomaly.tools.beat_lookup import BeatLookup, Rescorer
from ecg_anomaly.tools.live_events import LiveEvents
from ecg_anomaly.tools.live_page import numbers
from ecg_anomaly.tools.live_stats import Episodes, Snapshot
from tests.support.artifact import build_small_artifact, load_test_split
from tests.support.broker import REPO
from tests.support.chromium import dump_dom
from tests.support.worker import env_without_worker_settings, produce_beats, produce_raw, read_topic, wait_for

FEED, RATE = 600, 40.0  # 15 s of beats


class DrawnBeats(HTMLParser):
    """What a dumped DOM shows: each flagged beat's event id, path points and caption; element texts."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[dict[str, Any]] = []
        self.texts: dict[str, str] = {}  # element id → its text
        self.cells: list[str] = []  # the texts of the per-source table's cells, in order
        self._open: list[tuple[str, str | None]] = []  # (tag, id) of the open elements with text

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "figure" and a.get("data-event-id"):
            self.figures.append({"event_id": a["data-event-id"], "paths": {}, "caption": ""})
        elif tag == "path" and self.figures:
            points = re.findall(r"(-?[\d.]+),(-?[\d.]+)", a.get("d") or "")
            self.figures[-1]["paths"][a.get("class")] = np.array(points, dtype=float)
        if tag in ("p", "span", "figcaption", "td"):
            self._open.append((tag, a.get("id")))
            if tag == "td":
                self.cells.append("")

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1][0] == tag:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for tag, element_id in self._open:
            if element_id:
                self.texts[element_id] = self.texts.get(element_id, "") + data
            if tag == "figcaption":
                self.figures[-1]["caption"] += data + " "
        if self._open and self._open[-1][0] == "td":
            self.cells[-1] += data


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return orjson.loads(response.read())


def _page_url(page: subprocess.Popen[str]) -> str:
    assert page.stderr is not None
    lines = []
    for line in page.stderr:
        lines.append(line)
        found = re.search(r"live page at (http://127\.0\.0\.1:\d+/)", line)
        if found:
            return found.group(1)
    raise AssertionError(f"watch --web exited with {page.wait()} before serving:\n{''.join(lines)}")


@pytest.mark.kafka
def test_watch_web_draws_each_flagged_beat_with_its_per_sample_error_in_headless_chromium(
    kafka_bootstrap: str, topic_factory: Callable[..., str], worker_factory, tmp_path: Path
) -> None:
    model = build_small_artifact(tmp_path / "model")
    beats_topic = topic_factory(partitions=3, prefix="beats")
    anomalies = topic_factory(partitions=2, prefix="anomalies")
    worker = worker_factory(model, beats_topic, anomaly_topic=anomalies, scores_topic="")
    worker.wait_ready()
    command = [sys.executable, "-m", "ecg_anomaly", "watch", "--web", "--web-port", "0"]
    command += ["--bootstrap-servers", kafka_bootstrap, "--topic", anomalies, "--model", str(model)]
    command += ["--metrics-url", worker.url("/metrics")]
    page = subprocess.Popen(
        command, cwd=REPO, env=env_without_worker_settings(), stderr=subprocess.PIPE, text=True
    )
    beats, labels = load_test_split()
    # A feed that outlasts the browser's visit, so the page's rates have beats in their window.
    feed = threading.Thread(
        target=produce_beats,
        args=(kafka_bootstrap, beats_topic, beats[:FEED]),
        kwargs={"labels": labels[:FEED], "rate": RATE},
    )
    try:
        url = _page_url(page)
        feed.start()

        def a_beat_rescored() -> bool:
            _get(url + "api/stats")  # the first scrape: the start of the rates' window
            return any(beat["sample_error"] for beat in _get(url + "api/beats")["beats"])

        wait_for(a_beat_rescored, 60, "a flagged beat rescored by the page")
        dom = dump_dom(url)
        feed.join()
        wait_for(lambda: worker.metrics()["ecg_beats_consumed_total"] >= FEED, 60, "the worker to score all")
        events = {
            event["event_id"]: event
            for event in (orjson.loads(r.value) for r in read_topic(kafka_bootstrap, anomalies))
        }
        wait_for(lambda: _get(url + "api/stats")["events"] == len(events), 30, "the page to see every event")
        counted = {row["source_id"]: row["flagged"] for row in _get(url + "api/stats")["sources"]}
        assert counted == Counter(event["source_id"] for event in events.values())
        for beat in _get(url + "api/beats")["beats"]:  # the same model on the same values: the same score
            assert beat["rescored"] == pytest.approx(events[beat["event_id"]]["score"], rel=1e-5)
    finally:
        if feed.is_alive():
            feed.join()
        page.send_signal(signal.SIGINT)
        assert page.wait(30) == 0, page.stderr.read() if page.stderr else ""
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)  # the page stopped with the command

    drawn = DrawnBeats()
    drawn.feed(dom)
    assert drawn.figures, f"no flagged beat drawn:\n{dom[-3000:]}"
    originals = {
        (r.partition, r.offset): orjson.loads(r.value) for r in read_topic(kafka_bootstrap, beats_topic)
    }
    for figure in drawn.figures:
        event = events[figure["event_id"]]
        assert {"wave", "error"} <= set(figure["paths"]), f"{figure['event_id']}: drew {set(figure['paths'])}"
        wave, error = figure["paths"]["wave"], figure["paths"]["error"]
        assert len(wave) == m.BEAT_LENGTH and len(error) == m.BEAT_LENGTH + 2  # the error's area: 2 corners
        original = originals[(event["input"]["partition"], event["input"]["offset"])]
        assert original["beat_id"] == event["beat_id"]
        # The wave is the original beat, scaled: screen y falls as the value rises.
        assert np.corrcoef(-wave[:, 1], original["values"])[0, 1] > 0.9999
        assert event["source_id"] in figure["caption"] and "rescored by this page" in figure["caption"]

    tiles = drawn.texts
    assert int(tiles["beats-per-second"].replace(",", "")) > 0, tiles
    assert re.fullmatch(r"\d+\.\d%", tiles["anomaly-rate"]) and re.fullmatch(r"\d+ ms", tiles["p99"]), tiles
    assert 0 < int(tiles["anomalies"].replace(",", "")) <= len(events), tiles
    cells = drawn.cells
    rows = {cells[i]: int(cells[i + 1]) for i in range(0, len(cells), 8)}  # 8 columns: source, flagged, ...
    shown = int(re.search(r": ([\d,]+) anomaly events", tiles["where"]).group(1).replace(",", ""))
    assert rows and sum(rows.values()) == shown


@pytest.mark.kafka
def test_a_flagged_beat_is_read_back_rescored_or_its_absence_explained(
    kafka_bootstrap: str, kafka_admin: KafkaAdminClient, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    rescorer = Rescorer(build_small_artifact(tmp_path / "model"))
    version = rescorer.metadata.model_version
    values = load_test_split()[0][0]
    topic = topic_factory(partitions=1, prefix="beats")
    json_beat = (b"s", m.encode_beat_json("s", values), m.beat_headers())
    binary_beat = (b"s", m.encode_beat_binary(values), m.beat_headers(m.BINARY_CONTENT_TYPE))
    produce_raw(kafka_bootstrap, topic, [json_beat, json_beat, binary_beat, (b"s", b"{}", m.beat_headers())])
    kafka_admin.delete_records({TopicPartition(topic, 0): 1})  # offset 0: gone, as retention would do

    def event(offset: int, model_version: str = version) -> dict[str, Any]:
        where = {"topic": topic, "partition": 0, "offset": offset, "timestamp": 0}
        return {"event_id": f"{offset}-{model_version}", "model_version": model_version, "input": where}

    score, sample_error = rescorer.score(values)
    lookup = BeatLookup(KafkaConnection(kafka_bootstrap), rescorer)
    try:
        for offset in (2, 1):  # binary, JSON; backwards on one partition
            view = lookup.view(event(offset))
            np.testing.assert_allclose(view["values"], values, rtol=1e-6)
            np.testing.assert_allclose(view["sample_error"], sample_error, rtol=1e-6)
            assert view["rescored"] == pytest.approx(score) and view["note"] == ""
        other = lookup.view(event(1, "another-model"))
        assert other["values"] is not None and other["sample_error"] is None and other["rescored"] is None
        assert other["note"] == f"the page's model is {version}, the event's another-model: no error drawn"
        assert lookup.view(event(3))["note"].startswith(f"{topic} 0@3 is not a readable JSON beat")
        for offset in (0, 9):
            assert lookup.view(event(offset))["note"] == (
                f"{topic} 0@{offset} is not in the topic (deleted by retention, or never written)"
            )
    finally:
        lookup.close()
    without_model = BeatLookup(KafkaConnection(kafka_bootstrap), None)
    try:
        view = without_model.view(event(1))
    finally:
        without_model.close()
    assert view["values"] is not None and view["sample_error"] is None
    assert view["note"] == "no model given (--model): the per-sample error is not drawn"


def test_the_page_numbers_wait_for_a_window_then_come_from_it() -> None:
    buckets = ((0.01, 0.0), (0.1, 0.0), (float("inf"), 0.0))
    first = Snapshot(at=100.0, consumed=1000, normal=600, anomalies=390, latency=buckets)
    assert numbers(first, first)["beats_per_second"] is None and numbers(first, first)["p99_seconds"] is None
    later = Snapshot(
        at=110.0,
        consumed=3000,
        normal=1600,
        anomalies=1390,
        latency=((0.01, 1000), (0.1, 2000), (float("inf"), 2000)),
    )
    shown = numbers(later, first)
    assert shown["window_seconds"] == 10.0 and shown["beats_per_second"] == 200.0
    assert shown["anomaly_rate"] == 0.5  # 1,000 anomalies of the 2,000 beats scored in the window
    assert shown["p99_seconds"] == pytest.approx(0.01 + 0.09 * (1980 - 1000) / 1000)
    assert shown["scored"] == 2990 and shown["anomalies"] == 1390
    assert (shown["episodes_open"], shown["episodes_opened"], shown["episodes_closed"]) == (0, 0, 0)
    with_episodes = replace(
        later, episodes=Episodes(4, {"opened": 9, "updated": 30}, {"silent": 2, "recovered": 3})
    )
    shown = numbers(with_episodes, first)
    assert (shown["episodes_open"], shown["episodes_opened"], shown["episodes_closed"]) == (4, 9, 5)


def test_flagged_beats_are_counted_per_source_and_the_latest_kept() -> None:
    events = LiveEvents(keep=2)
    for i, (source, severity, label) in enumerate(
        [("a", "low", "anomaly"), ("b", "high", "normal"), ("a", "critical", None), ("c", "low", "anomaly")]
    ):
        event = {"event_id": str(i), "source_id": source, "severity": severity, "beat_time": f"t{i}"}
        events.add(orjson.dumps(event if label is None else {**event, "label": label}))
    events.add(b"not json")
    events.add(None)
    assert [e["event_id"] for e in events.latest()] == ["3", "2"]  # newest first
    assert (events.total, events.unreadable) == (4, 2)
    rows, count = events.sources(limit=2)
    assert count == 3 and [row["source_id"] for row in rows] == ["a", "b"]  # most flagged, then by name
    assert rows[0] == {
        "source_id": "a",
        "flagged": 2,
        "severities": {"low": 1, "medium": 0, "high": 0, "critical": 1},
        "labelled": 1,
        "labelled_abnormal": 1,
        "last_beat_time": "t2",
    }
