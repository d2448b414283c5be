"""Per-beat scoring cost of model artifacts, as the worker pays it: onnxruntime in-process, one intra-op
thread, the artifact loaded through the worker's loader, batches of 1 and 1,024 test-split beats.

    python -m tests.benchmarks.scoring_cost BEFORE.onnx AFTER.onnx [--rounds 15] [--seconds 0.5]

Rounds interleave the artifacts (A, B, A, B, ...) so a busy neighbour slows both alike; each round
times as many calls as fit in ``--seconds``. Prints, per artifact and batch size, the fastest and the
median round in microseconds per beat, and the ratio of each later artifact to the first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from ecg_anomaly.worker.model import load_model
from tests.support.artifact import load_test_split

BATCHES = (1, 1024)


def per_beat_microseconds(model: Any, beats: np.ndarray, seconds: float) -> float:
    model.score(beats)  # warm-up
    calls, started = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - started < seconds:
        model.score(beats)
        calls += 1
    return (time.perf_counter() - started) / calls / len(beats) * 1e6


def measure(paths: list[Path], rounds: int, seconds: float) -> dict[str, Any]:
    beats = load_test_split()[0]
    batches = {
        n: np.ascontiguousarray(np.resize(beats, (n, beats.shape[1])), dtype=np.float32) for n in BATCHES
    }
    models = [load_model(p, threads=1) for p in paths]
    times: dict[tuple[int, int], list[float]] = {(i, n): [] for i in range(len(models)) for n in BATCHES}
    for _ in range(rounds):
        for i, model in enumerate(models):
            for n, batch in batches.items():
                times[(i, n)].append(per_beat_microseconds(model, batch, seconds))
    result: dict[str, Any] = {"load_average": os.getloadavg(), "rounds": rounds, "artifacts": []}
    for i, path in enumerate(paths):
        entry: dict[str, Any] = {"path": str(path), "model_version": models[i].version}
        for n in BATCHES:
            fastest, median = min(times[(i, n)]), statistics.median(times[(i, n)])
            entry[f"batch_{n}"] = {"fastest_us": round(fastest, 2), "median_us": round(median, 2)}
            if i:
                first = result["artifacts"][0][f"batch_{n}"]
                entry[f"batch_{n}"]["ratio_fastest"] = round(fastest / first["fastest_us"], 2)
                entry[f"batch_{n}"]["ratio_median"] = round(median / first["median_us"], 2)
        result["artifacts"].append(entry)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifacts", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=0.5)
    args = parser.parse_args()
    print(json.dumps(measure(args.artifacts, args.rounds, args.seconds), indent=2))


if __name__ == "__main__":
    main()
