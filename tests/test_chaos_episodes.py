"""Alert episodes through SIGKILLs and partitions moving between two workers, against an undisturbed run.

Scripted sources (runs of anomalous beats, isolated ones, silences) are fed at a steady rate while
worker ``a`` runs, ``b`` joins, either is SIGKILLed again and again (each restarted as a pod would
be), and ``a`` leaves. Once the group has committed every input, one undisturbed worker in a new
group replays the same input onto its own alerts topic. Exactly-once: a ``read_committed`` reader
finds the same alert records per source, in the same order, none missing, none twice. At-least-once:
none missing, and every extra record an identical copy. Every beat's own outcome is checked too
(``tests.support.chaos``).

The ``short`` runs are in ``make test``; the ``full`` ones are marked ``chaos``.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import orjson
import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from tests.support.chaos import ChaosRun
from tests.support.episode_feed import BeatValues, alerts_by_source, interleaved, random_patterns, send
from tests.support.worker import WorkerProcess, wait_for

pytestmark = pytest.mark.kafka

RULE = {
    "episode_open_anomalies": 3,
    "episode_window": 5,
    "episode_close_normal": 4,
    "episode_silence": 20,
    "episode_update_interval": 5,
}
# name: (sources, beats per source, beats/s, SIGKILLs, guarantee)
RUNS = {
    "short-eos": (16, 240, 120.0, 5, "exactly-once"),
    "short-alo": (16, 240, 120.0, 5, "at-least-once"),
    "full-eos": (48, 1500, 300.0, 20, "exactly-once"),
    "full-alo": (48, 1500, 300.0, 20, "at-least-once"),
}


def _params() -> list:
    long_run = (pytest.mark.chaos, pytest.mark.timeout(1800))
    return [pytest.param(k, id=k, marks=() if k.startswith("short") else long_run) for k in RUNS]


@pytest.mark.parametrize("run_name", _params())
def test_episodes_through_sigkills_and_moving_partitions(
    kafka_bootstrap: str, small_model: Path, tmp_path: Path, run_name: str
) -> None:
    sources, length, rate, kills, guarantee = RUNS[run_name]
    values = BeatValues.of(small_model)
    beats = interleaved(random_patterns(sum(map(ord, run_name)), sources, length))
    run = ChaosRun(kafka_bootstrap, small_model, tmp_path, guarantee, episodes=True, **RULE)
    alerts = {name: f"{run.topics['input']}-alerts-{name}" for name in ("disturbed", "undisturbed")}
    extra_topics = [*alerts.values(), *(f"{alerts['undisturbed']}-{x}" for x in ("anomalies", "dlq"))]
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(t, 6, 1) for t in extra_topics])
    admin.close()
    run.options["alerts_topic"] = alerts["disturbed"]
    run.total = len(beats)
    feed = _Feed(kafka_bootstrap, run.topics["input"], beats, values, rate, kills + 1)
    a = run.supervise("a")
    try:
        a.wait_ready()
        feed.start()
        b = run.supervise("b")  # joins while the first part is fed: partitions move
        workers = [a, b]
        for i in range(kills):  # each SIGKILL while a part of the feed is being sent
            sup = workers[i % 2]
            sup.wait_ready()
            feed.wait_sending(i)
            time.sleep(feed.part_seconds * random.uniform(0.1, 0.6))
            victim = sup.kill(signal.SIGKILL)
            wait_for(lambda s=sup, v=victim: s.current is not v, 60, "the supervisor to restart the worker")
            feed.go_on(i)
        a.wait_ready()  # (a SIGTERM inside interpreter start-up is another case: chaos 5)
        assert a.stop() == 0, a.current.log()  # a leaves: b takes every partition
        feed.join()
        run.wait_lag_zero(300)
    finally:
        feed.go_on(kills)
        exits = run.stop_all()
    verdict = run.verdict()
    reference = _undisturbed(run, alerts["undisturbed"], tmp_path)
    found = alerts_by_source(kafka_bootstrap, alerts["disturbed"], committed_only=True)
    missing, extra, strangers = _compare(found, reference)
    opened = sum(1 for rs in reference.values() for r in rs if r["kind"] == "opened")
    killed = sum(1 for s in run.supervisors for c in s.exit_codes if c == -signal.SIGKILL)
    run.report(
        f"episodes SIGKILL x{killed} + join/leave",
        verdict,
        verdict.passed(run.exactly_once) and not missing and not strangers,
        alerts=sum(map(len, reference.values())),
        episodes=opened,
        alerts_missing=len(missing),
        alerts_extra=len(extra),
        alerts_differing=len(strangers),
        restarts=sum(s.restarts for s in run.supervisors),
    )
    assert killed >= kills and set(exits) == {0}
    assert verdict.inputs == len(beats) and verdict.missing == [] and verdict.differing == 0
    assert opened > sources  # the scripts did open episodes
    assert missing == [] and strangers == [], (missing[:3], strangers[:3])
    if run.exactly_once:
        assert verdict.duplicates == 0
        assert found == reference  # per source, in order: nothing missing, nothing twice


class _Feed(threading.Thread):
    """Sends the beats in ``parts`` parts at ``rate``; before each next part it waits for ``go_on``
    (so every SIGKILL lands while beats are being sent, however slow the machine is)."""

    def __init__(self, bootstrap: str, topic: str, beats: list, values: BeatValues, rate: float, parts: int):
        super().__init__(name="feed", daemon=True)
        size = -(-len(beats) // parts)
        self._parts = [beats[i : i + size] for i in range(0, len(beats), size)]
        self._args = (bootstrap, topic, values, rate)
        self.part_seconds = size / rate
        self._sending = [threading.Event() for _ in self._parts]
        self._go = [threading.Event() for _ in self._parts]
        self.error: BaseException | None = None

    def run(self) -> None:
        bootstrap, topic, values, rate = self._args
        try:
            for i, part in enumerate(self._parts):
                if i:
                    self._go[i - 1].wait()
                self._sending[i].set()
                send(bootstrap, topic, part, values, None, rate)
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    def wait_sending(self, part: int) -> None:
        assert self._sending[part].wait(300), f"part {part} of the feed never started"

    def go_on(self, part: int) -> None:
        for event in self._go[: part + 1]:
            event.set()

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self.error is not None:
            raise AssertionError("the feed failed") from self.error


def _undisturbed(run: ChaosRun, alerts_topic: str, tmp_path: Path) -> dict[str, list[dict]]:
    """The same input through one worker that nothing disturbs (a new group: its own changelog)."""
    options = {
        **run.options,
        "alerts_topic": alerts_topic,
        "anomaly_topic": f"{alerts_topic}-anomalies",
        "scores_topic": "",
        "dlq_topic": f"{alerts_topic}-dlq",
    }
    worker = WorkerProcess(
        run.bootstrap,
        run.model,
        run.topics["input"],
        f"{run.group}-undisturbed",
        tmp_path / "u.log",
        **options,
    ).start()
    try:
        worker.wait_ready()
        wait_for(lambda: worker.metrics()["ecg_beats_consumed_total"] >= run.total, 300, "the replay")
    finally:
        worker.stop()
    return alerts_by_source(run.bootstrap, alerts_topic, committed_only=True)


def _compare(
    found: dict[str, list[dict]], reference: dict[str, list[dict]]
) -> tuple[list[dict], list[dict], list[dict]]:
    """(records of the reference not found, copies found twice or more, records the reference lacks)."""
    missing, extra, strangers = [], [], []
    for source in set(found) | set(reference):
        want = [orjson.dumps(r) for r in reference.get(source, [])]
        got = [orjson.dumps(r) for r in found.get(source, [])]
        missing += [orjson.loads(r) for r in want if r not in got]
        strangers += [orjson.loads(r) for r in got if r not in want]
        extra += [orjson.loads(r) for i, r in enumerate(got) if r in got[:i]]
        first_seen = list(dict.fromkeys(got))
        if not strangers and first_seen != want:  # the same records, in another order
            strangers += [{"source": source, "order": "differs"}]
    return missing, extra, strangers
