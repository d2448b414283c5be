"""The worker's own options (besides the shared Kafka connection options): one table.

Each row is a flag, an ``ECG_*`` environment variable, a default, help and validation
(:class:`~ecg_anomaly.base.options.Option`); the documentation's configuration table is generated
from it.
"""

from __future__ import annotations

from ecg_anomaly.base.kafka import CONNECTION_OPTIONS
from ecg_anomaly.base.options import Option, boolean, finite, non_negative, positive


def _sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower())


OPTIONS: tuple[Option, ...] = (
    Option("model", "ECG_MODEL", None, "path of the trainer's model.onnx", default_text="(required)"),
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
        finite,
        check=positive,
        check_text="a positive number",
        default_text="(the artifact's)",
    ),
    Option(
        "reload_interval",
        "ECG_RELOAD_INTERVAL",
        5.0,
        "seconds between checks of the model file for a change (0 = no hot reload)",
        finite,
        check=non_negative,
        check_text="zero or more",
    ),
    Option("input_topic", "ECG_INPUT_TOPIC", "ecg.beats", "topic of incoming beats"),
    Option("anomaly_topic", "ECG_ANOMALY_TOPIC", "ecg.anomalies", "topic of anomaly events"),
    Option(
        "scores_topic",
        "ECG_SCORES_TOPIC",
        "",
        "topic for every beat's score (empty: off)",
        default_text="(off)",
    ),
    Option("dlq_topic", "ECG_DLQ_TOPIC", "ecg.beats.dlq", "dead-letter topic"),
    Option("group_id", "ECG_GROUP_ID", "ecg-worker", "consumer group id"),
    Option(
        "group_instance_id",
        "ECG_GROUP_INSTANCE_ID",
        "",
        "static group membership id, e.g. a StatefulSet's pod name: a restarted pod takes its "
        "partitions back without a rebalance (empty: dynamic membership)",
        default_text="(dynamic)",
    ),
    Option("client_id", "ECG_CLIENT_ID", "", "Kafka client id", default_text="ecg-worker-<hostname>"),
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
        "exactly-once: this replica's transactional id, stable across its restarts",
        default_text="<group-id>-<hostname>",
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
        check=positive,
        check_text="a positive integer",
    ),
    Option(
        "max_wait_ms",
        "ECG_MAX_WAIT_MS",
        100,
        "longest wait for a batch to start filling (ms)",
        int,
        check=positive,
        check_text="a positive integer",
    ),
    Option(
        "fetch_max_wait_ms",
        "ECG_FETCH_MAX_WAIT_MS",
        20,
        "broker-side fetch wait (ms)",
        int,
        check=non_negative,
        check_text="zero or more",
    ),
    Option(
        "linger_ms",
        "ECG_LINGER_MS",
        2,
        "producer linger (ms): how long outputs may wait to share a request with others",
        int,
        check=non_negative,
        check_text="zero or more",
    ),
    Option(
        "commit_interval_ms",
        "ECG_COMMIT_INTERVAL_MS",
        100,
        "at-least-once: commit acknowledged offsets at most this often (ms; a crash re-processes at "
        "most this much more); exactly-once commits one transaction per batch",
        int,
        check=positive,
        check_text="a positive integer",
    ),
    Option(
        "max_record_bytes",
        "ECG_MAX_RECORD_BYTES",
        65536,
        "larger input values are dead-lettered as oversized",
        int,
        check=positive,
        check_text="a positive integer",
    ),
    Option(
        "max_key_bytes",
        "ECG_MAX_KEY_BYTES",
        1024,
        "longer record keys (and JSON source ids, the outputs' key) are dead-lettered as oversized_key",
        int,
        check=positive,
        check_text="a positive integer",
    ),
    Option(
        "max_output_bytes",
        "ECG_MAX_OUTPUT_BYTES",
        0,
        "largest output record (bytes, all output topics); 0 = each topic's max.message.bytes, read "
        "through the admin API (Kafka's default 1048588 when it cannot be read)",
        int,
        check=non_negative,
        check_text="zero or more",
    ),
    Option(
        "inference_threads",
        "ECG_INFERENCE_THREADS",
        1,
        "onnxruntime intra-op threads",
        int,
        check=positive,
        check_text="a positive integer",
    ),
    Option(
        "session_timeout_ms",
        "ECG_SESSION_TIMEOUT_MS",
        10000,
        "consumer group session timeout (ms)",
        int,
        check=positive,
        check_text="a positive integer",
    ),
    Option(
        "kafka_timeout",
        "ECG_KAFKA_TIMEOUT",
        30.0,
        "seconds allowed for a produce flush, commit or transaction call",
        finite,
        check=positive,
        check_text="a positive number",
    ),
    Option(
        "broker_timeout",
        "ECG_BROKER_TIMEOUT",
        120.0,
        "exit 1 when the broker stays unreachable, or no rebalance completes, for this many seconds",
        finite,
        check=positive,
        check_text="a positive number",
    ),
    Option(
        "drain_timeout",
        "ECG_DRAIN_TIMEOUT",
        15.0,
        "seconds from SIGTERM to exit: finish the batch, flush, commit, close",
        finite,
        check=positive,
        check_text="a positive number",
    ),
    Option(
        "episodes",
        "ECG_EPISODES",
        False,
        "alert episodes per source on --alerts-topic: open at k anomalous of the last n beats, close "
        "after m normal ones or a silence; the state is kept in a compacted changelog topic",
        boolean,
        kind="switch",
    ),
    Option("alerts_topic", "ECG_ALERTS_TOPIC", "ecg.alerts", "episodes: topic of the alert records"),
    Option(
        "episode_changelog_topic",
        "ECG_EPISODE_CHANGELOG_TOPIC",
        "",
        "episodes: the state's compacted changelog topic, as many partitions as the input topic "
        "(created so if missing)",
        default_text="<group-id>-episodes-changelog",
    ),
    Option(
        "episode_open_anomalies",
        "ECG_EPISODE_OPEN_ANOMALIES",
        5,
        "episodes: k, the anomalous beats among a source's last --episode-window beats that open one",
        int,
        check=positive,
        check_text="a positive integer",
    ),
    Option(
        "episode_window",
        "ECG_EPISODE_WINDOW",
        10,
        "episodes: n, the last beats of a source in which --episode-open-anomalies are counted",
        int,
        check=positive,
        check_text="a positive integer",
    ),
    Option(
        "episode_close_normal",
        "ECG_EPISODE_CLOSE_NORMAL",
        15,
        "episodes: m, the normal beats in a row that close one",
        int,
        check=positive,
        check_text="a positive integer",
    ),
    Option(
        "episode_silence",
        "ECG_EPISODE_SILENCE",
        30.0,
        "episodes: seconds of beat time without a beat from its source that close one (measured on "
        "the partition's latest beat time)",
        finite,
        check=positive,
        check_text="a positive number",
    ),
    Option(
        "episode_update_interval",
        "ECG_EPISODE_UPDATE_INTERVAL",
        60.0,
        "episodes: an open one's news is written at most this often (seconds of beat time; 0 = only "
        "opened and closed)",
        finite,
        check=non_negative,
        check_text="zero or more",
    ),
    Option("http_host", "ECG_HTTP_HOST", "0.0.0.0", "address of /metrics, /healthz, /readyz"),
    Option(
        "http_port",
        "ECG_HTTP_PORT",
        8080,
        "port of /metrics, /healthz, /readyz (0: any free port)",
        int,
        check=lambda v: 0 <= v <= 65535,
        check_text="0..65535",
    ),
    Option(
        "liveness_timeout",
        "ECG_LIVENESS_TIMEOUT",
        60.0,
        "/healthz fails when the loop has not turned for this many seconds",
        finite,
        check=positive,
        check_text="a positive number",
    ),
    Option("log_level", "ECG_LOG_LEVEL", "INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
)

# The worker's whole table: its own options, then the connection's.
ALL_OPTIONS: tuple[Option, ...] = (*OPTIONS, *CONNECTION_OPTIONS)
