"""``make bench``: the whole worker benchmark in one run, printed as a table and written as JSON.

Run: ``.venv/bin/python -m tests.bench.run`` (``--quick`` for a short run, ``--only`` for some parts).
Starts its own local broker unless ``KAFKA_BOOTSTRAP_SERVERS`` is set. The
model is ``artifacts/model.onnx`` (the default preset, as ``make demo`` trains
it) if present, else ``--model``, else the tutorial preset trained once into
``bench-results/model/``. A benchmark, not a test: figures depend on the
machine and on whatever else runs on it, so the load average is recorded
with every part and ratios are only taken within one run.

Parts: ``kernel`` (onnxruntime vs Keras), ``throughput`` (worker vs the
passthrough ceiling of its own client vs a naive Keras worker, JSON and binary,
plus normal-beats-only feeds), ``kafka_python`` (the passthrough ceiling of the
worker's previous client, kafka-python), ``scaleout`` (1 vs 2 worker processes, 4
partitions), ``latency`` (2,000 beats/s from 1,000 sources), ``ready`` (time to
ready; memory comes from the throughput runs), ``episode_rules`` (the episode rule on the replayed
ECG5000 stream, without a broker: what its defaults rest on), ``episodes`` (throughput with
``--episodes`` on vs off, and the ECG5000 test split replayed as 16 sources: anomaly events vs
alert records per hour), ``episode_state`` (state memory per 1,000 sources, restore time).

``--tls``: the broker is started secured (``kafka.sh up --secure``) and the throughput and latency
parts also run over its SASL_SSL listener (SCRAM-SHA-512; the latency feed and reader too), rows
``tls_json``, ``tls_binary`` and ``tls_latency``, interleaved with the plaintext ones, which go
through the same broker's PLAINTEXT listener.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NamedTuple

from kafka.admin import KafkaAdminClient

from tests.bench import episodes_worker as ep
from tests.bench import worker_throughput as wt
from tests.bench.common import Feed, create_topics, fill, run_module, unique
from tests.bench.report import table
from tests.support.broker import REPO, LocalBroker
from tests.support.secure import SecuredKafka

KAFKA_PYTHON_BEATS = 200_000
PARTS = (
    "kernel",
    "throughput",
    "kafka_python",
    "scaleout",
    "latency",
    "ready",
    "episode_rules",
    "episodes",
    "episode_state",
)
EPISODE_SOURCES = 100_000  # restore time and memory are measured for this many sources (quick: 20,000)


def _model(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    for candidate in (REPO / "artifacts" / "model.onnx", REPO / "bench-results" / "model" / "model.onnx"):
        if candidate.exists() and candidate.with_name("model.keras").exists():
            return candidate
    out = REPO / "bench-results" / "model"
    print(f"training the tutorial preset into {out} (once) ...", flush=True)
    cli = str(Path(sys.executable).with_name("ecg-anomaly"))
    subprocess.run(
        [cli, "train", "--preset", "tutorial", "--quiet", "--out-dir", str(out), "--no-report"],
        check=True,
        cwd=REPO,
    )
    return out / "model.onnx"


def _passthrough(
    bootstrap: str, admin: KafkaAdminClient, feed: Feed, client: str, count: int = 0
) -> dict[str, Any]:
    out = unique("bench-pass-out")
    create_topics(admin, out)
    args = ["--client", client, "--bootstrap", bootstrap, "--topic", feed.topic, "--out-topic", out]
    args += ["--group", unique("bench-pass"), "--count", str(count or feed.beats)]
    return run_module("tests.bench.passthrough", *args)


def _naive(
    bootstrap: str, admin: KafkaAdminClient, model: Path, feed: Feed, seconds: float
) -> dict[str, Any]:
    out = unique("bench-naive-out")
    create_topics(admin, out)
    args = ["worker", "--model", str(model), "--bootstrap", bootstrap, "--topic", feed.topic]
    args += ["--out-topic", out, "--group", unique("bench-naive"), "--seconds", str(seconds)]
    return run_module("tests.bench.naive", *args, *(["--binary"] if feed.binary else []))


class _Tls(NamedTuple):
    address: str  # the SASL_SSL listener
    flags: dict[str, str]  # the worker's security flags
    client: dict[str, Any]  # librdkafka's settings for the latency feed and reader


def _tls(secured: SecuredKafka) -> _Tls:
    """Everything over SASL_SSL as the broker's admin (a super user: no ACLs to grant per topic)."""
    flags = secured.scram_flags("admin")
    address = flags.pop("bootstrap_servers")
    client = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "admin",
        "sasl.password": secured.password("admin"),
        "ssl.ca.location": flags["ssl_cafile"],
    }
    return _Tls(address, flags, client)


def _median_key(run: dict[str, Any]) -> float:
    """What a part's runs are ordered by to pick the median one: throughput, or the latency's p99."""
    return float(run.get("beats_per_s", run.get("p99_ms", 0)))


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model.onnx with model.keras beside it")
    parser.add_argument("--beats", type=int, default=500_000, help="beats per pre-filled feed")
    parser.add_argument(
        "--rounds", type=int, default=3, help="throughput runs per part, interleaved; the median is reported"
    )
    parser.add_argument("--rate", type=float, default=2000.0, help="beats/s of the latency run")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured length of the latency run")
    parser.add_argument(
        "--warmup", type=float, default=15.0, help="seconds at the same rate before measuring"
    )
    parser.add_argument("--sources", type=int, default=1000, help="sources of the latency run")
    parser.add_argument(
        "--latency-runs",
        type=int,
        default=3,
        help="latency runs; the one with the median p99 is reported (a shared machine's tail varies)",
    )
    parser.add_argument("--naive-seconds", type=float, default=15.0, help="length of each naive-worker run")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="40,000 beats, one round, one 10 s latency run after 10 s warm-up, 5 s naive runs",
    )
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="run some parts")
    parser.add_argument(
        "--baseline-python",
        help="the Python of another build of the worker, installed (not editable) in its own venv: its "
        "worker runs interleaved with this one in the throughput, latency and ready parts, so a change "
        "is measured before and after in one run (rows 'baseline')",
    )
    parser.add_argument(
        "--baseline-model",
        type=Path,
        help="another artifact (model.onnx): the worker scoring with it runs interleaved with this one in "
        "the throughput, latency and ready parts (rows 'baseline'; with --baseline-python, that build scores "
        "with it)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="a secured broker; throughput and latency also over its SASL_SSL listener (rows tls_*)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "bench.json")
    args = parser.parse_args()
    if args.quick:
        args.beats, args.seconds, args.naive_seconds, args.warmup, args.rounds = 40_000, 10.0, 5.0, 10.0, 1
        args.latency_runs = 1
    episode_sources = 20_000 if args.quick else EPISODE_SOURCES

    from tests.support.artifact import load_test_split

    beats, labels = load_test_split()
    model = _model(args.model)
    logs = Path(tempfile.mkdtemp(prefix="ecg-bench-"))
    results: dict[str, Any] = {
        "model": str(model),
        "cpu_count": os.cpu_count(),
        "beats": args.beats,
        "rounds": args.rounds,
    }
    results["load_avg_at_start"] = _load()
    results["date"] = time.strftime("%Y-%m-%d")
    results["commit"] = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    baseline = {"python": args.baseline_python} if args.baseline_python else {}
    if baseline:
        results["baseline_python"] = args.baseline_python
    compare = bool(baseline) or args.baseline_model is not None
    other = model if args.baseline_model is None else _model(args.baseline_model)  # the baseline's
    if args.baseline_model is not None:
        results["baseline_model"] = str(other)
    with ExitStack() as stack:
        broker: LocalBroker | None = None
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
        if bootstrap and args.tls:
            parser.error("--tls starts its own secured broker: unset KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            broker = stack.enter_context(LocalBroker(secure=args.tls))
            bootstrap = broker.bootstrap
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        stack.callback(admin.close)
        tls = _tls(SecuredKafka(broker, admin)) if args.tls and broker is not None else None
        results["tls"] = "SASL_SSL, SCRAM-SHA-512" if tls else None

        def part(name: str, run: Any, *run_args: Any, **run_kwargs: Any) -> None:
            print(f"... {name} (load average {_load()[0]})", flush=True)
            started = time.monotonic()
            try:
                result = run(*run_args, **run_kwargs)
            except Exception as exc:  # one failed part must not cost the others' figures
                result = {"error": repr(exc)[-2000:]}
                print(f"    {name} failed: {exc!r}", flush=True)
            result = {**result, "seconds": round(time.monotonic() - started, 1), "load_avg": _load()}
            runs = [*results.get(name, {}).get("runs", []), result]  # a part run again: keep every run
            ok = sorted((x for x in runs if "error" not in x), key=_median_key)
            results[name] = {**(ok[len(ok) // 2] if ok else result), "runs": runs}  # the median run
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2))

        if "kernel" in args.only:
            part("kernel", run_module, "tests.bench.naive", "kernel", "--model", str(model))
        feeds: dict[str, Feed] = {}
        if {"throughput", "kafka_python", "scaleout", "episodes"} & set(args.only):
            for kind, binary in (("json", False), ("binary", True)):
                feeds[kind] = fill(bootstrap, admin, beats, args.beats, binary, sources=50)
                if "throughput" in args.only:
                    normal = beats[labels == 0]
                    feeds[f"{kind}_normal_only"] = fill(bootstrap, admin, normal, args.beats, binary, 50)
        if "throughput" in args.only:
            for _ in range(args.rounds):  # interleaved, so a noisy minute hits both sides of a ratio
                for kind in ("json", "binary"):
                    part(f"passthrough_{kind}", _passthrough, bootstrap, admin, feeds[kind], "worker")
                    part(f"worker_{kind}", wt.throughput, bootstrap, model, admin, feeds[kind], logs)
                    if tls:
                        part(
                            f"tls_{kind}",
                            wt.throughput,
                            tls.address,
                            model,
                            admin,
                            feeds[kind],
                            logs,
                            **tls.flags,
                        )
                    if compare:
                        part(
                            f"baseline_{kind}",
                            wt.throughput,
                            bootstrap,
                            other,
                            admin,
                            feeds[kind],
                            logs,
                            **baseline,
                        )
                for kind in ("json_normal_only", "binary_normal_only"):
                    part(f"worker_{kind}", wt.throughput, bootstrap, model, admin, feeds[kind], logs)
                    if compare:
                        part(
                            f"baseline_{kind}",
                            wt.throughput,
                            bootstrap,
                            other,
                            admin,
                            feeds[kind],
                            logs,
                            **baseline,
                        )
            for kind in ("json", "binary"):
                part(f"naive_{kind}", _naive, bootstrap, admin, model, feeds[kind], args.naive_seconds)
        if "kafka_python" in args.only:
            for kind in ("json", "binary"):
                part(
                    f"kafka_python_passthrough_{kind}",
                    _passthrough,
                    bootstrap,
                    admin,
                    feeds[kind],
                    "kafka-python",
                    min(KAFKA_PYTHON_BEATS, args.beats),  # a few times slower: a shorter drain is enough
                )
        if "scaleout" in args.only:
            for n in (1, 2):
                part(f"scaleout_{n}", wt.throughput, bootstrap, model, admin, feeds["binary"], logs, n)
        if "latency" in args.only:
            lat = (args.rate, args.seconds, args.sources, logs, args.warmup)
            for _ in range(args.latency_runs):
                part("latency", wt.latency, bootstrap, model, admin, beats, *lat, broker and broker.pid())
                if tls and broker:
                    part(
                        "tls_latency",
                        wt.latency,
                        tls.address,
                        model,
                        admin,
                        beats,
                        *lat,
                        broker.pid(),
                        client=tls.client,
                        **tls.flags,
                    )
                if compare:
                    part(
                        "baseline_latency", wt.latency, bootstrap, other, admin, beats, *lat, None, **baseline
                    )
        if "episode_rules" in args.only:
            part("episode_rules", run_module, "tests.bench.episode_rules", "--model", str(model))
        if "episodes" in args.only:
            for _ in range(args.rounds):  # interleaved, as the throughput part
                for kind in ("json", "binary"):
                    for on in (False, True):
                        name = f"episodes_{'on' if on else 'off'}_{kind}"
                        part(name, ep.throughput, bootstrap, model, admin, feeds[kind], logs, on)
            part("episodes_replay", ep.replay, bootstrap, model, admin, logs)
        if "episode_state" in args.only:
            part("episode_memory", ep.memory, model, episode_sources)
            part("episode_restore", ep.restore, bootstrap, model, admin, logs, episode_sources)
        if "ready" in args.only:
            part("time_to_ready", wt.time_to_ready, bootstrap, model, admin, 3, logs)
            if compare:
                part("baseline_time_to_ready", wt.time_to_ready, bootstrap, other, admin, 3, logs, **baseline)
    results["load_avg_at_end"] = _load()
    args.out.write_text(json.dumps(results, indent=2))
    print(table(results))
    print(f"\nJSON: {args.out}   worker logs: {logs}")


if __name__ == "__main__":
    main()
