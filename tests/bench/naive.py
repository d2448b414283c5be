"""Keras baselines: the scoring kernel (onnxruntime vs Keras) and a naive Keras-per-message worker.

Both run as their own process (``python -m tests.bench.naive kernel|worker ...``)
so TensorFlow never loads into the benchmark driver or the worker. Each prints
one JSON line.

* ``kernel``: beats/s of one scoring call at batch sizes 1, 64 and 1,024, for
  onnxruntime as the worker configures it (one intra-op thread) and for the
  artifact's Keras model through ``predict`` and through a direct call (both
  with the same normalisation and error in numpy, TensorFlow's default threads).
* ``worker``: the tutorial way, one message at a time: consume, ``json.loads``
  (or ``frombuffer``), ``model.predict`` on that one beat, publish an event if
  it is an anomaly, auto-commit. Runs for ``--seconds`` (it cannot drain a
  200,000-beat topic in reasonable time) and reports its rate.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BATCH_SIZES = (1, 64, 1024)


def _keras(model_onnx: Path) -> tuple[Any, Any]:
    import keras

    from ecg_anomaly.worker.model import load_model

    return keras.models.load_model(model_onnx.with_name("model.keras"), compile=False), load_model(
        model_onnx
    ).metadata


def _rate(call: Any, beats: np.ndarray, budget: float) -> float:
    """Beats/s of ``call(beats)``, repeated for about ``budget`` seconds after one warm-up call."""
    call(beats)
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < budget:
        call(beats)
        calls += 1
    return calls * len(beats) / (time.perf_counter() - start)


def kernel(args: argparse.Namespace) -> dict[str, Any]:
    from ecg_anomaly.worker.model import load_model
    from tests.support.artifact import load_test_split

    beats = load_test_split()[0]
    onnx = load_model(args.model, threads=1)
    model, meta = _keras(args.model)
    lo, hi = np.float32(meta.norm_min), np.float32(meta.norm_max)

    def keras_score(reconstruct: Any) -> Any:
        def score(x: np.ndarray) -> np.ndarray:
            normalised = (x - lo) / (hi - lo)
            return np.abs(np.asarray(reconstruct(normalised)) - normalised).mean(axis=1)

        return score

    ways = {
        "onnxruntime": onnx.score,
        "keras_predict": keras_score(lambda x: model.predict(x, batch_size=len(x), verbose=0)),
        "keras_call": keras_score(lambda x: model(x, training=False)),
    }
    result: dict[str, Any] = {}
    for n in BATCH_SIZES:
        batch = np.ascontiguousarray(np.resize(beats, (n, beats.shape[1])), dtype=np.float32)
        result[str(n)] = {name: round(_rate(call, batch, args.seconds)) for name, call in ways.items()}
    return result


def worker(args: argparse.Namespace) -> dict[str, Any]:
    from kafka import KafkaConsumer, KafkaProducer

    model, meta = _keras(args.model)
    lo, hi = np.float32(meta.norm_min), np.float32(meta.norm_max)
    consumer = KafkaConsumer(
        args.topic, bootstrap_servers=args.bootstrap, group_id=args.group, auto_offset_reset="earliest"
    )
    producer = KafkaProducer(bootstrap_servers=args.bootstrap)
    consumed, started = 0, None
    while started is None or time.monotonic() - started < args.seconds:
        for records in consumer.poll(timeout_ms=100, max_records=1).values():
            for record in records:
                if started is None:
                    started = time.monotonic()
                if args.binary:
                    beat = np.frombuffer(record.value, dtype="<f4")
                else:
                    beat = np.asarray(json.loads(record.value)["values"], dtype=np.float32)
                x = ((beat - lo) / (hi - lo))[np.newaxis]
                score = float(np.abs(model.predict(x, verbose=0) - x).mean())
                if score > meta.threshold:
                    event = {"offset": record.offset, "score": score, "threshold": meta.threshold}
                    producer.send(args.out_topic, json.dumps(event).encode(), key=record.key)
                consumed += 1
    elapsed = time.monotonic() - (started or time.monotonic())
    producer.flush(30)
    producer.close(timeout=5)
    consumer.close()
    return {"beats": consumed, "seconds": round(elapsed, 1), "beats_per_s": round(consumed / elapsed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("kernel", "worker"))
    parser.add_argument("--model", type=Path, required=True, help="model.onnx with model.keras beside it")
    parser.add_argument("--seconds", type=float, default=1.0, help="kernel: per measurement; worker: run")
    parser.add_argument("--bootstrap", default="")
    parser.add_argument("--topic", default="")
    parser.add_argument("--out-topic", default="")
    parser.add_argument("--group", default="")
    parser.add_argument("--binary", action="store_true")
    args = parser.parse_args()
    print(json.dumps(kernel(args) if args.what == "kernel" else worker(args)))


if __name__ == "__main__":
    main()
