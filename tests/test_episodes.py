"""Alert episodes without a broker: the rule record by record, batching, silence, bounded state,
the changelog's order and what a restore from any part of a checkpoint gives back."""

from __future__ import annotations

import itertools
import random

import jsonschema
import pytest

from ecg_anomaly.base.errors import ConfigError
from ecg_anomaly.schemas import messages as m
from ecg_anomaly.worker.episodes.changelog import ChangelogWriter
from ecg_anomaly.worker.episodes.rules import EpisodeRules
from ecg_anomaly.worker.episodes.state import CLOCK_KEY, PENDING_FIELDS, decode, encode
from ecg_anomaly.worker.episodes.store import EpisodeStore
from ecg_anomaly.worker.events import OutRecord
from tests.support.episodes import TOPIC, Beat, alerts, interleave, place, run, script, store


def _brief(alert: dict) -> tuple:
    return (
        alert["source_id"],
        alert["kind"],
        alert["sequence"],
        alert["first_beat_time"][17:23],
        alert["last_beat_time"][17:23],
        alert["anomalous_beats"],
        alert["total_beats"],
        alert["opened_by"]["offset"],
        alert["peak"]["offset"],
        alert.get("closed_reason"),
    )


def test_an_episode_opens_at_k_of_n_and_closes_after_m_normal_beats_record_by_record() -> None:
    #          offsets: 0123456789...
    beats = place(script("a", "NNAANANNNNAAAAAANAAANNN"))
    found = alerts(run(store(k=3, n=5, m=3), beats))
    for alert in found:
        jsonschema.validate(alert, m.alert_schema(), format_checker=jsonschema.FormatChecker())
    assert [_brief(a) for a in found] == [
        # 3 of the 5 beats 1..5 anomalous: opens at 5, from the first of them (2); 2..5 are 4 beats;
        # the scores rise with the offset within each 7 (script), so the peak is 5, then 12, then 13
        ("a", "opened", 0, "02.000", "05.000", 3, 4, 5, 5, None),
        ("a", "closed", 1, "02.000", "05.000", 3, 4, 5, 5, "recovered"),  # 6, 7, 8 normal
        # 9 normal, 10..12 anomalous: opens at 12; a normal beat inside (16) counts in total, the
        # 3 normal ones at the end do not
        ("a", "opened", 0, "10.000", "12.000", 3, 3, 12, 12, None),
        ("a", "closed", 1, "10.000", "19.000", 9, 10, 12, 13, "recovered"),
    ]
    ids = {a["episode_id"] for a in found}
    assert ids == {m.episode_id(TOPIC, 0, 5), m.episode_id(TOPIC, 0, 12)}


def test_k_anomalous_beats_spread_over_more_than_n_beats_open_nothing() -> None:
    spread = place(script("a", "ANNANNANNANNA"))  # 3 anomalous beats span 7
    assert alerts(run(store(k=3, n=5, m=3), spread)) == []
    assert [(a["kind"], a["opened_by"]["offset"]) for a in alerts(run(store(k=3, n=7, m=9), spread))] == [
        ("opened", 6)
    ]


def test_updates_come_at_most_every_interval_and_only_with_news() -> None:
    # one beat a second; updates at most every 3 s; beats 12..19 normal (no news), then closed
    beats = place(script("a", "AAAAAAAAANNNNNNNNNN"))
    found = alerts(run(store(k=3, n=5, m=10, update_s=3), beats))
    assert [(a["kind"], a["last_beat_time"][17:19], a["anomalous_beats"]) for a in found] == [
        ("opened", "02", 3),
        ("updated", "05", 6),
        ("updated", "08", 9),
        ("closed", "08", 9),
    ]
    assert [a["kind"] for a in alerts(run(store(k=3, n=5, m=10, update_s=0), beats))] == ["opened", "closed"]


def test_a_silent_source_is_closed_on_its_partitions_clock_before_that_records_own_beat() -> None:
    # a: an episode, then nothing from second 4; b: normal beats every second keep the clock going
    stream = interleave(script("a", "AAAA"), script("b", "N" * 30))
    beats = place(stream)
    found = alerts(run(store(k=3, n=5, m=3, silence_s=10), beats))
    assert [(a["kind"], a.get("closed_reason")) for a in found] == [("opened", None), ("closed", "silent")]
    # closed at the first record whose beat time is more than 10 s after a's last beat (3 s): b's at 14 s
    st = store(k=3, n=5, m=3, silence_s=10)
    steps = run(st, beats, cuts=[i for i, b in enumerate(beats) if b.ms == 14_000])
    assert [s.counts["silent"] for s in steps] == [0, 1] and st.sources == 0

    # a source back after a silence starts over: its own late beat comes after the close
    back = place(interleave(script("a", "AAA" + "." * 20 + "AAA"), script("b", "N" * 30)))
    kinds = [(a["kind"], a["opened_by"]["offset"]) for a in alerts(run(store(silence_s=10), back))]
    assert [k for k, _ in kinds] == ["opened", "closed", "opened"] and kinds[0][1] != kinds[2][1]


def _mixed(seed: int, beats: int = 600, sources: int = 7, partitions: int = 2) -> list[Beat]:
    """Several sources with runs of anomalous beats, a few going silent for a while."""
    rng = random.Random(seed)
    streams = []
    for s in range(sources):
        pattern = "".join(
            rng.choice("AAAN" if rng.random() < 0.3 else "NNNNNNNNA") if rng.random() > 0.02 else "." * 25
            for _ in range(beats // sources)
        )
        streams.append(script(f"src-{s}", pattern, start_ms=rng.randrange(1000), every_ms=800 + 50 * s))
    return place(interleave(*streams), partitions)


def _by_source(found: list[dict]) -> dict[str, list[dict]]:
    """Alerts per source in order: the order that is defined (partitions interleave batch by batch)."""
    out: dict[str, list[dict]] = {}
    for a in found:
        out.setdefault(a["source_id"], []).append(a)
    return out


def _final_state(s: EpisodeStore) -> dict[tuple[int, str], bytes]:
    return {(p, src): encode(st) for p in s.partitions for src, st in s._parts[p].sources.items()}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_same_beats_in_any_batches_give_the_same_alerts_and_state(seed: int) -> None:
    beats = _mixed(seed)
    whole = store(update_s=5)
    expected = alerts(run(whole, beats))
    assert {a["kind"] for a in expected} == {"opened", "updated", "closed"}
    assert {a.get("closed_reason") for a in expected} == {None, "recovered", "silent"}
    rng = random.Random(seed)
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(beats)), rng.randrange(1, 80)))
        again = store(update_s=5)
        assert _by_source(alerts(run(again, beats, cuts))) == _by_source(expected)
        assert _final_state(again) == _final_state(whole)


def test_state_per_source_stays_bounded_by_the_rule() -> None:
    """At most k - 1 pending beats while closed; no state once a source's window is clear."""
    k, n = 4, 8
    s = store(k=k, n=n, m=5, silence_s=30)
    beats = _mixed(9, beats=5000, sources=40, partitions=3)
    for lo in range(0, len(beats), 97):
        run(s, beats[lo : lo + 97])
        for p in s.partitions:
            for st in s._parts[p].sources.values():
                assert len(st.pending or ()) <= (k - 1) * PENDING_FIELDS and (
                    st.episode is None or not st.pending
                )
                assert not st.empty
    assert s.sources == sum(len(s._parts[p].sources) for p in s.partitions)
    assert s.state_bytes == sum(len(encode(st)) for p in s.partitions for st in s._parts[p].sources.values())


def test_a_state_survives_its_changelog_value() -> None:
    s = store(update_s=2)
    run(s, place(script("a", "NNAANAAAANA")))
    run(s, place(script("b", "NA"), 1)[1:])
    for st in s._parts[0].sources.values():
        assert encode(decode(encode(st))) == encode(st)


def test_the_rule_refuses_more_anomalies_than_its_window() -> None:
    with pytest.raises(ConfigError, match="--episode-open-anomalies 9 of --episode-window 8"):
        EpisodeRules(9, 8, 3, 1000, 0)


# --- the changelog -----------------------------------------------------------------------------------


def _kinds(records: list[OutRecord]) -> list[str]:
    out = []
    for r in records:
        if r.key == CLOCK_KEY:
            out.append("clock")
        elif r.value is None:
            out.append(f"tombstone {r.key.decode()}")
        elif b'"seq"' in r.value:
            out.append(f"value {r.key.decode()}")
        else:
            out.append(f"empty {r.key.decode()}")
    return out


def test_a_checkpoint_writes_values_then_the_clock_then_tombstones_of_empties_already_acknowledged() -> None:
    s, writer = store(k=2, n=3, m=2), ChangelogWriter("log")
    (step,) = run(s, place(script("a", "AANN") + script("b", "A", start_ms=5000)))  # a closes: empty
    records, written = writer.records(step.changes)
    assert _kinds(records) == ["empty a", "value b", "clock"]
    assert {r.partition for r in records} == {0}
    (step,) = run(s, [Beat(0, 5, "b", 6000, 0.1)])
    assert _kinds(writer.records(step.changes)[0]) == ["value b", "clock"]  # a's empty not yet acknowledged
    writer.acknowledged(written)
    records, written = writer.records(step.changes)
    assert _kinds(records) == ["value b", "clock", "tombstone a"]
    writer.acknowledged(written)
    assert _kinds(writer.records(step.changes)[0]) == ["value b", "clock"]  # deleted once


def _restore(records: list[OutRecord], partitions: list[int], writer: ChangelogWriter) -> EpisodeStore:
    s = store(update_s=5)
    for p in partitions:
        s.begin(p)
        for r in records:
            if r.partition == p:
                s.load(p, r.key, r.value)  # type: ignore[arg-type]
        writer.reset(p, s.finish(p))
    return s


@pytest.mark.parametrize("seed", [4, 5])
def test_a_restore_from_any_prefix_of_a_checkpoint_misses_no_alert_and_repeats_only_identical_ones(
    seed: int,
) -> None:
    """At-least-once: batches' alerts are acknowledged, then their checkpoint is written, then the
    offsets committed. The worker dies while checkpoint D is written: any prefix of its records is
    durable, the alerts of batches after D may be lost, and the next owner re-reads from checkpoint C's
    committed offsets with the state it restores."""
    beats = _mixed(seed, beats=900)
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(beats)), 40))
    reference = alerts(run(store(update_s=5), beats, cuts))
    bounds = [0, *cuts, len(beats)]
    batches = [beats[lo:hi] for lo, hi in itertools.pairwise(bounds)]
    tried = 0
    for crash in range(6, len(batches), 7):
        writer, live = ChangelogWriter("log"), store(update_s=5)
        durable: list[OutRecord] = []
        acked: list[dict] = []
        pending: dict = {}
        committed: dict[int, int] = {}
        retired: dict[int, int] = {}
        for i, b in enumerate(batches[:crash]):
            (step,) = run(live, b)
            if i >= crash - 2:  # sent, never acknowledged: in no checkpoint, their alerts lost
                continue
            acked.extend(alerts([step]))
            for p, keyed in step.changes.items():
                pending.setdefault(p, {}).update(keyed)
            for x in b:
                retired[x.partition] = x.offset + 1
            if i % 3 == 2 and i < crash - 4:  # a complete checkpoint, then its commit
                records, written = writer.records(pending)
                durable += records
                writer.acknowledged(written)
                pending = {}
                committed = dict(retired)
        last, _ = writer.records(pending)  # the checkpoint being written at the crash
        for cut in sorted({0, len(last), *rng.sample(range(len(last) + 1), min(6, len(last) + 1))}):
            restored = _restore(durable + last[:cut], [0, 1], ChangelogWriter("log"))
            again = [x for x in beats if x.offset >= committed.get(x.partition, 0)]
            after = alerts(run(restored, again, sorted(rng.sample(range(1, len(again)), 10))))
            seen = acked + after
            missing = [a for a in reference if a not in seen]
            strangers = [a for a in after if a not in reference]
            assert missing == [] and strangers == [], (crash, cut)
            assert _final_state(restored) == _final_state(run_all(beats))
            tried += 1
    assert tried > 10


def run_all(beats: list[Beat]) -> EpisodeStore:
    s = store(update_s=5)
    run(s, beats)
    return s


class _Record:  # what watch reads of a consumed message
    def __init__(self, value: bytes, offset: int = 7) -> None:
        self._value, self._offset = value, offset

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return "alerts"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


def test_watch_prints_each_alert_record_on_one_readable_line() -> None:
    from ecg_anomaly.tools.watch import FORMATS, format_alert

    assert FORMATS["alerts"] is format_alert
    steps = run(store(k=3, n=5, m=3), place(script("bed-4", "NNAANANNNN")))
    records = [r.value for s in steps for r in s.alerts]
    opened, closed = (format_alert(_Record(v)) for v in records)
    episode = m.episode_id(TOPIC, 0, 5)
    assert opened.startswith("1970-01-01T00:00:05.000Z  bed-4        opened ")
    assert "#0 " in opened and "3/4 beats anomalous since 1970-01-01T00:00:02.000Z" in opened
    assert f"model v1  episode {episode}  [opened by {TOPIC} 0@5]" in opened
    assert "(recovered)" not in opened
    assert closed.startswith("1970-01-01T00:00:05.000Z  bed-4        closed (recovered) ")
    assert "#1 " in closed
    assert format_alert(_Record(b"not json", 12)).startswith("unreadable alert at alerts 0@12: ")
    assert format_alert(_Record(b'{"kind": "opened"}')).startswith("unreadable alert at alerts 0@7: ")
