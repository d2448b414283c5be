"""The benchmark's results as one Markdown table (printed by ``make bench``; docs/performance.md keeps runs).

``python -m tests.bench.report bench-results/bench.json`` prints the table of a saved run again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _n(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def _ratio(a: float, b: float) -> str:
    """One decimal at most: run to run, this machine's rates move by up to 20%."""
    if not b:
        return "n/a"
    return f"{a / b:,.0f}x" if a / b >= 10 else f"{a / b:.1f}x"


def _against_goal(a: float, b: float) -> str:
    """A ratio a goal is set on: two decimals, so that 0.76 does not read as a met 0.8."""
    return f"{a / b:.2f}x" if b else "n/a"


def _rounds(results: dict[str, Any], part: str, ceiling: str, rate: str = "beats_per_s") -> str:
    """Each round's ratio of ``part`` to ``ceiling``, ``0.77 / 0.75 / 0.77`` (the rounds interleave the
    parts, so run i of one met run i of the other); empty for a single round. ``rate``: the part's
    key for its rate (``beats_per_s_at_scrape``: timed at the scrape that saw it done)."""
    pairs = zip(results.get(part, {}).get("runs", []), results.get(ceiling, {}).get("runs", []), strict=False)
    ratios = [
        f"{x.get(rate, x['beats_per_s']) / y['beats_per_s']:.2f}"
        for x, y in pairs
        if "error" not in x and "error" not in y
    ]
    return " / ".join(ratios) if len(ratios) > 1 else ""


def _goal(rounds: str) -> str:
    return f"(rounds {rounds}; goal >= 0.8x)" if rounds else "(goal >= 0.8x)"


def table(results: dict[str, Any]) -> str:
    r = {k: v for k, v in results.items() if not (isinstance(v, dict) and "error" in v)}
    failed = [k for k, v in results.items() if isinstance(v, dict) and "error" in v]
    rows: list[tuple[str, str, str]] = [
        (f"{name}: FAILED", results[name]["error"][:200], "") for name in failed
    ]
    if "kernel" in r:
        for size, k in r["kernel"].items():
            if not size.isdigit():  # "seconds", "load_avg"
                continue
            rows.append(
                (
                    f"scoring kernel, batch {int(size):,} (beats/s)",
                    f"onnxruntime {_n(k['onnxruntime'])}; Keras predict {_n(k['keras_predict'])}, "
                    f"direct call {_n(k['keras_call'])}",
                    f"{_ratio(k['onnxruntime'], k['keras_predict'])} predict, "
                    f"{_ratio(k['onnxruntime'], k['keras_call'])} direct call",
                )
            )
    for kind in ("json", "binary"):
        w, p, nv = (r.get(f"{x}_{kind}") for x in ("worker", "passthrough", "naive"))
        if w and p and nv:
            rows.append(
                (
                    f"{kind} beats/s, one worker, {w['anomaly_share']:.0%} flagged",
                    f"worker {_n(w['beats_per_s'])}; passthrough {_n(p['beats_per_s'])}; "
                    f"naive Keras {_n(nv['beats_per_s'])}",
                    f"{_against_goal(w['beats_per_s'], p['beats_per_s'])} of the ceiling "
                    f"{_goal(_rounds(r, f'worker_{kind}', f'passthrough_{kind}'))}, "
                    f"{_ratio(w['beats_per_s'], nv['beats_per_s'])} naive",
                )
            )
        normal, p = r.get(f"worker_{kind}_normal_only"), r.get(f"passthrough_{kind}")
        if normal and p:
            rows.append(
                (
                    f"{kind} beats/s, one worker, normal beats ({normal['anomaly_share']:.0%} flagged)",
                    f"worker {_n(normal['beats_per_s'])}",
                    f"{_against_goal(normal['beats_per_s'], p['beats_per_s'])} of the ceiling "
                    f"{_goal(_rounds(r, f'worker_{kind}_normal_only', f'passthrough_{kind}'))}",
                )
            )
        old, p = r.get(f"kafka_python_passthrough_{kind}"), r.get(f"passthrough_{kind}")
        if old and p:
            rows.append(
                (
                    f"{kind} passthrough ceiling, kafka-python (the previous client; beats/s)",
                    _n(old["beats_per_s"]),
                    f"confluent-kafka moves {_ratio(p['beats_per_s'], old['beats_per_s'])} as much",
                )
            )
    for kind in ("json", "binary"):
        tls, plain = r.get(f"tls_{kind}"), r.get(f"worker_{kind}")
        if tls and plain:
            rows.append(
                (
                    f"{kind} beats/s, one worker, over {r.get('tls') or 'TLS'}",
                    f"TLS {_n(tls['beats_per_s'])}; plaintext {_n(plain['beats_per_s'])} (same broker)",
                    f"{_ratio(tls['beats_per_s'], plain['beats_per_s'])} of plaintext; CPU "
                    f"{tls['cpu_us_per_beat']} vs {plain['cpu_us_per_beat']} us/beat",
                )
            )
    one, two = r.get("scaleout_1"), r.get("scaleout_2")
    if one and two:
        rows.append(
            (
                "scale-out, binary, 4 partitions (beats/s)",
                f"1 process {_n(one['beats_per_s'])}; 2 processes {_n(two['beats_per_s'])}",
                f"{_ratio(two['beats_per_s'], one['beats_per_s'])}",
            )
        )
    if lat := r.get("latency"):
        rows.append(
            (
                f"latency at {_n(lat['rate'])} JSON beats/s, {lat['sources']:,} sources, "
                f"{lat['measured_s']:.0f} s after {lat['warmup_s']:.0f} s warm-up (ms)",
                f"producer → event arrival p50 {lat['p50_ms']}, p95 {lat['p95_ms']}, p99 {lat['p99_ms']}",
                f"worker histogram p50 {lat['worker_histogram_p50_ms']}, p95 "
                f"{lat['worker_histogram_p95_ms']}, p99 {lat['worker_histogram_p99_ms']}",
            )
        )
        if stages := lat.get("stages_ms"):
            rows.append(
                (
                    "the same window by stage, worker histograms (ms)",
                    "; ".join(f"{name} p50 {q['p50']}, p99 {q['p99']}" for name, q in stages.items()),
                    "fetch: producer, broker, fetch; process: the worker; publish: produce to acknowledged",
                )
            )
        if cpu := lat.get("cpu_share"):
            rows.append(
                (
                    "the same window: CPU used, share of one CPU",
                    ", ".join(f"{name} {share:.2f}" for name, share in cpu.items() if name != "steal"),
                    f"of {r.get('cpu_count')} CPUs; steal (the host's other guests) {cpu.get('steal', 0)}",
                )
            )
        if len(lat_runs := [x for x in lat.get("runs", []) if "p99_ms" in x]) > 1:
            rows.append(
                (
                    f"latency, every run ({len(lat_runs)}; the table shows the one with the median p99)",
                    "p99 " + " / ".join(f"{x['p99_ms']}" for x in lat_runs) + " ms",
                    "steal "
                    + " / ".join(f"{x.get('cpu_share', {}).get('steal', '?')}" for x in lat_runs)
                    + " of a CPU in the same runs",
                )
            )
    if (tls := r.get("tls_latency")) and (plain := r.get("latency")):
        rows.append(
            (
                f"latency at {_n(tls['rate'])} JSON beats/s over {r.get('tls') or 'TLS'}: feed, worker "
                "and reader (ms)",
                f"producer → event arrival p50 {tls['p50_ms']}, p95 {tls['p95_ms']}, p99 {tls['p99_ms']}",
                f"plaintext p99 {plain['p99_ms']} (same broker); worker histogram p99 "
                f"{tls['worker_histogram_p99_ms']}",
            )
        )
    runs = _runs(r, "worker_")
    if runs:
        rows.append(
            (
                "worker resident memory (MB)",
                f"{min(x['rss_mb'] for x in runs)}-{max(x['rss_mb'] for x in runs)} at the end of a drain",
                f"peak {max(x['peak_rss_mb'] for x in runs)} (VmHWM)",
            )
        )
    if ready := r.get("time_to_ready"):
        rows.append(
            (
                "time to ready (s)",
                f"median {ready['median_s']}, max {ready['max_s']}",
                f"{ready['starts']} starts",
            )
        )
    rows += _episode_rows(r)
    rows += _baseline_rows(r)
    parts = [v for v in r.values() if isinstance(v, dict)]
    loads = [run["load_avg"][0] for v in parts for run in v.get("runs", [v]) if "load_avg" in run]
    head = [
        f"load average (1 min) during the parts: {min(loads, default=0):.1f}-{max(loads, default=0):.1f}; "
        f"{r['cpu_count']} CPUs; {r['beats']:,} beats per feed; throughput: the median of "
        f"{r.get('rounds', 1)} interleaved runs per part; model {r['model']}; "
        f"every run's figures, load average and duration are in the JSON",
        "",
        "| measure | result | ratio / notes |",
        "| --- | --- | --- |",
    ]
    return "\n".join(head + [f"| {a} | {b} | {c} |" for a, b, c in rows])


def _runs(r: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    parts = [v for k, v in r.items() if k.startswith(prefix) and isinstance(v, dict)]
    return [run for v in parts for run in v.get("runs", [v]) if "rss_mb" in run]


def _episode_rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The episode parts: throughput on vs off, the ECG5000 replay, state memory and restore."""
    rows = []
    for kind in ("json", "binary"):
        on, off = r.get(f"episodes_on_{kind}"), r.get(f"episodes_off_{kind}")
        if on and off:
            rows.append(
                (
                    f"{kind} beats/s, --episodes on vs off ({on['anomaly_share']:.0%} flagged, 50 sources)",
                    f"on {_n(on['beats_per_s'])}; off {_n(off['beats_per_s'])}; "
                    f"CPU {on['cpu_us_per_beat']} vs {off['cpu_us_per_beat']} us/beat",
                    f"{_against_goal(on['beats_per_s'], off['beats_per_s'])} "
                    f"{_goal(_rounds(r, f'episodes_on_{kind}', f'episodes_off_{kind}'))}",
                )
            )
    if replay := r.get("episodes_replay"):
        x = replay
        rows.append(
            (
                f"ECG5000 test split as {replay['sources']} sources, {replay['beat_hours']:g} h of beat time "
                f"(72 beats a minute each), defaults: {replay['rule']}",
                f"anomaly events {_n(x['anomaly_events_per_hour'])}/h; episodes opened "
                f"{_n(x['episodes_opened_per_hour'])}/h; alert records {_n(x['alert_records_per_hour'])}/h",
                f"{x['reduction_opened']}x fewer pages (opened), {x['reduction_records']}x fewer records",
            )
        )
    if mem := r.get("episode_memory"):
        rows.append(
            (
                f"episode state per 1,000 sources (in-process, tracemalloc, {mem['sources']:,} sources)",
                f"open episode {mem['open_bytes_per_1000_sources'] / 1000:,.0f} KB; the most pending beats "
                f"{mem['pending_bytes_per_1000_sources'] / 1000:,.0f} KB; as the replay leaves them "
                f"{mem['replayed_bytes_per_1000_sources_with_state'] / 1000:,.0f} KB",
                f"changelog values: {mem['open_changelog_bytes_per_1000_sources'] / 1000:,.0f} and "
                f"{mem['pending_changelog_bytes_per_1000_sources'] / 1000:,.0f} KB",
            )
        )
    if res := r.get("episode_restore"):
        rows.append(
            (
                f"restore of {res['sources']:,} sources ({res['open']:,} open) on assignment (s)",
                f"{res['restore_s']} ({res['restored_records']:,.0f} records, "
                f"{res['changelog_bytes'] / 1e6:.1f} MB); ready after {res['time_to_ready_s']} s",
                f"worker RSS {res['rss_mb']} MB after it",
            )
        )
    return rows


def _versus_ceiling(r: dict[str, Any], kind: str, rate: str = "beats_per_s") -> str:
    """``0.82x vs 0.77x of the ceiling (rounds ... vs ...)``: this worker's and the baseline's rate
    (``rate``: ``beats_per_s_at_scrape`` for both timed to the scrape that saw the drain done; a
    baseline without it has only that) over the passthrough's, with each round's."""
    ceiling_part = f"passthrough_{kind.removesuffix('_normal_only')}"
    c = r[ceiling_part]["beats_per_s"]
    now, before = (r[f"{who}_{kind}"] for who in ("worker", "baseline"))
    a, b = now.get(rate, now["beats_per_s"]), before.get(rate, before["beats_per_s"])
    return (
        f"{_against_goal(a, c)} vs {_against_goal(b, c)} of the ceiling (rounds "
        f"{_rounds(r, f'worker_{kind}', ceiling_part, rate) or '-'} vs "
        f"{_rounds(r, f'baseline_{kind}', ceiling_part, rate) or '-'})"
    )


def _baseline_rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    """This build and model against ``--baseline-python``'s build and ``--baseline-model``'s model,
    where both ran (same feeds, same rounds)."""
    if "baseline_python" not in r and "baseline_model" not in r:
        return []
    rows = []
    this = "this build" if "baseline_python" in r else "this model"  # what differs from the baseline
    for kind in ("json", "binary", "json_normal_only", "binary_normal_only"):
        now, before = r.get(f"worker_{kind}"), r.get(f"baseline_{kind}")
        ceiling_part = f"passthrough_{kind.removesuffix('_normal_only')}"
        ceiling = r.get(ceiling_part)
        if now and before and ceiling:
            name = kind.replace("_", " ")
            rows.append(
                (
                    f"{name} beats/s, {this} vs baseline ({now['anomaly_share']:.0%} flagged)",
                    f"{_n(now['beats_per_s'])} vs {_n(before['beats_per_s'])}; "
                    f"CPU {now['cpu_us_per_beat']} vs {before['cpu_us_per_beat']} us/beat",
                    _versus_ceiling(r, kind),
                )
            )
            if now.get("end", "scrape") != before.get("end", "scrape"):  # a baseline without the gauge
                scraped = "beats_per_s_at_scrape"
                rows.append(
                    (
                        f"{name} beats/s, {this} vs baseline, both timed at the scrape",
                        f"{_n(now[scraped])} vs {_n(before.get(scraped, before['beats_per_s']))}",
                        _versus_ceiling(r, kind, scraped),
                    )
                )
    now, before = r.get("latency"), r.get("baseline_latency")
    if now and before:
        rows.append(
            (
                f"latency p99 at the same rate, {this} vs baseline (ms)",
                f"reader {now['p99_ms']} vs {before['p99_ms']}; worker histogram "
                f"{now['worker_histogram_p99_ms']} vs {before['worker_histogram_p99_ms']}",
                "every run: "
                + " / ".join(str(x.get("p99_ms")) for x in now.get("runs", []))
                + " vs "
                + " / ".join(str(x.get("p99_ms")) for x in before.get("runs", [])),
            )
        )
    if (mine := _runs(r, "worker_")) and (theirs := _runs(r, "baseline_")):
        rows.append(
            (
                f"resident memory, {this} vs baseline (MB)",
                f"peak {max(x['peak_rss_mb'] for x in mine)} vs {max(x['peak_rss_mb'] for x in theirs)}",
                "VmHWM over every drain",
            )
        )
    now, before = r.get("time_to_ready"), r.get("baseline_time_to_ready")
    if now and before:
        rows.append(
            (
                f"time to ready, {this} vs baseline (s)",
                f"median {now['median_s']} vs {before['median_s']}",
                "",
            )
        )
    if "baseline_python" in r:
        rows.append(("baseline", str(r["baseline_python"]), "another build's worker, run in the same rounds"))
    if "baseline_model" in r:
        rows.append(("baseline model", str(r["baseline_model"]), "another artifact, in the same rounds"))
    return rows


if __name__ == "__main__":  # re-print a saved run: python -m tests.bench.report bench-results/bench.json
    print(table(json.loads(Path(sys.argv[1]).read_text())))
