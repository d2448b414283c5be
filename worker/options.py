"""Every worker option: flag, environment variable, default, help and validation, in one table.

The README's configuration table lists the same rows; ``tests/test_worker_units.py`` checks it does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Option:
    name: str  # settings field; the flag is --name-with-dashes
    env: str
    default: Any
    help: str
    parse: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], bool] | None = None  # extra validation; False means invalid
    check_text: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {text!r}")
    return value


def _positive(value: float) -> bool:
    return value > 0


def _non_negative(value: float) -> bool:
    return value >= 0


def _sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower())


_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

OPTIONS: tuple[Option, ...] = (
    Option("model", "ECG_MODEL", None, "path of the trainer's model.onnx (required)"),
    Option(
        "model_sha256",
        "ECG_MODEL_SHA256",
        "",
        "refuse a model file with another sha256 (hex)",
        check=lambda v: v == "" or _sha256(v),
        check_text="64 hex digits",
    ),
    Option(
        "threshold",
        "ECG_THRESHOLD",
        None,
        "override the artifact's anomaly threshold",
        _float,
        check=_positive,
        check_text="a positive number",
    ),
    Option(
        "reload_interval",
        "ECG_RELOAD_INTERVAL",
        5.0,
        "seconds between checks of the model file for a change (0 = no hot reload)",
        _float,
        check=_non_negative,
        check_text="zero or more",
    ),
    Option("bootstrap_servers", "ECG_BOOTSTRAP_SERVERS", "localhost:9092", "Kafka bootstrap servers"),
    Option("input_topic", "ECG_INPUT_TOPIC", "ecg.beats", "topic of incoming beats"),
    Option("anomaly_topic", "ECG_ANOMALY_TOPIC", "ecg.anomalies", "topic of anomaly events"),
    Option("scores_topic", "ECG_SCORES_TOPIC", "", "topic for every beat's score (empty = off)"),
    Option("dlq_topic", "ECG_DLQ_TOPIC", "ecg.beats.dlq", "dead-letter topic"),
    Option("group_id", "ECG_GROUP_ID", "ecg-worker", "consumer group id"),
    Option(
        "group_instance_id",
        "ECG_GROUP_INSTANCE_ID",
        "",
        "static group membership id (e.g. the pod name of a StatefulSet; empty = dynamic)",
    ),
    Option("client_id", "ECG_CLIENT_ID", "", "Kafka client id (default ecg-worker-<hostname>)"),
    Option(
        "guarantee",
        "ECG_GUARANTEE",
        "at-least-once",
        "delivery guarantee",
        choices=("at-least-once", "exactly-once"),
    ),
    Option(
        "transactional_id",
        "ECG_TRANSACTIONAL_ID",
        "",
        "exactly-once: stable per replica (default <group-id>-<hostname>)",
    ),
    Option(
        "auto_offset_reset",
        "ECG_AUTO_OFFSET_RESET",
        "earliest",
        "where a new group starts reading",
        choices=("earliest", "latest"),
    ),
    Option(
        "max_batch",
        "ECG_MAX_BATCH",
        1024,
        "most beats per scored batch",
        int,
        check=_positive,
        check_text="a positive integer",
    ),
    Option(
        "max_wait_ms",
        "ECG_MAX_WAIT_MS",
        100,
        "longest wait for a batch to start filling (ms)",
        int,
        check=_positive,
        check_text="a positive integer",
    ),
    Option(
        "fetch_max_wait_ms",
        "ECG_FETCH_MAX_WAIT_MS",
        20,
        "broker-side fetch wait (ms)",
        int,
        check=_non_negative,
        check_text="zero or more",
    ),
    Option(
        "linger_ms",
        "ECG_LINGER_MS",
        2,
        "producer linger (ms): how long outputs may wait to share a request with others",
        int,
        check=_non_negative,
        check_text="zero or more",
    ),
    Option(
        "commit_interval_ms",
        "ECG_COMMIT_INTERVAL_MS",
        100,
        "at-least-once: commit acknowledged offsets at most this often (ms; a crash re-processes at "
        "most this much more); exactly-once commits one transaction per batch",
        int,
        check=_positive,
        check_text="a positive integer",
    ),
    Option(
        "max_record_bytes",
        "ECG_MAX_RECORD_BYTES",
        65536,
        "larger input values are dead-lettered as oversized",
        int,
        check=_positive,
        check_text="a positive integer",
    ),
    Option(
        "max_key_bytes",
        "ECG_MAX_KEY_BYTES",
        1024,
        "longer record keys (and JSON source ids, the outputs' key) are dead-lettered as oversized_key",
        int,
        check=_positive,
        check_text="a positive integer",
    ),
    Option(
        "max_output_bytes",
        "ECG_MAX_OUTPUT_BYTES",
        0,
        "largest output record (bytes, all output topics); 0 = each topic's max.message.bytes, read "
        "through the admin API (Kafka's default 1048588 when it cannot be read)",
        int,
        check=_non_negative,
        check_text="zero or more",
    ),
    Option(
        "inference_threads",
        "ECG_INFERENCE_THREADS",
        1,
        "onnxruntime intra-op threads",
        int,
        check=_positive,
        check_text="a positive integer",
    ),
    Option(
        "session_timeout_ms",
        "ECG_SESSION_TIMEOUT_MS",
        10000,
        "consumer group session timeout (ms)",
        int,
        check=_positive,
        check_text="a positive integer",
    ),
    Option(
        "kafka_timeout",
        "ECG_KAFKA_TIMEOUT",
        30.0,
        "seconds allowed for a produce flush, commit or transaction call",
        _float,
        check=_positive,
        check_text="a positive number",
    ),
    Option(
        "broker_timeout",
        "ECG_BROKER_TIMEOUT",
        120.0,
        "exit non-zero when the broker stays unreachable this many seconds",
        _float,
        check=_positive,
        check_text="a positive number",
    ),
    Option(
        "drain_timeout",
        "ECG_DRAIN_TIMEOUT",
        15.0,
        "seconds from SIGTERM to exit: finish the batch, flush, commit, close",
        _float,
        check=_positive,
        check_text="a positive number",
    ),
    Option("http_host", "ECG_HTTP_HOST", "0.0.0.0", "address of /metrics, /healthz, /readyz"),
    Option(
        "http_port",
        "ECG_HTTP_PORT",
        8080,
        "port of /metrics, /healthz, /readyz",
        int,
        check=lambda v: 0 <= v <= 65535,
        check_text="0..65535",
    ),
    Option(
        "liveness_timeout",
        "ECG_LIVENESS_TIMEOUT",
        60.0,
        "/healthz fails when the loop has not turned for this many seconds",
        _float,
        check=_positive,
        check_text="a positive number",
    ),
    Option("log_level", "ECG_LOG_LEVEL", "INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    Option(
        "security_protocol",
        "ECG_KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        "Kafka security protocol",
        choices=_PROTOCOLS,
    ),
    Option("sasl_mechanism", "ECG_KAFKA_SASL_MECHANISM", "PLAIN", "SASL mechanism", choices=_MECHANISMS),
    Option("sasl_username", "ECG_KAFKA_SASL_USERNAME", "", "SASL user name"),
    Option(
        "sasl_password_file",
        "ECG_KAFKA_SASL_PASSWORD_FILE",
        "",
        "file holding the SASL password (or set ECG_KAFKA_SASL_PASSWORD)",
    ),
    Option("ssl_cafile", "ECG_KAFKA_SSL_CAFILE", "", "CA bundle (PEM) to verify the brokers"),
    Option("ssl_certfile", "ECG_KAFKA_SSL_CERTFILE", "", "client certificate (PEM) for mutual TLS"),
    Option("ssl_keyfile", "ECG_KAFKA_SSL_KEYFILE", "", "client private key (PEM) for mutual TLS"),
    Option(
        "ssl_password_file",
        "ECG_KAFKA_SSL_PASSWORD_FILE",
        "",
        "file holding the client key's password (or set ECG_KAFKA_SSL_PASSWORD)",
    ),
    Option("ssl_check_hostname", "ECG_KAFKA_SSL_CHECK_HOSTNAME", True, "verify the broker host name", _bool),
)

# Secrets: (settings field, env var holding the value, option naming the file).
SECRETS = (
    ("sasl_password", "ECG_KAFKA_SASL_PASSWORD", "sasl_password_file"),
    ("ssl_password", "ECG_KAFKA_SSL_PASSWORD", "ssl_password_file"),
)
