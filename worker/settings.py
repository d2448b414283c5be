"""The worker's one settings object, built once from flags and environment variables.

Every option has a flag and an ``ECG_*`` environment variable (:mod:`ecg_anomaly.worker.options`
and the shared :data:`~ecg_anomaly.base.kafka.CONNECTION_OPTIONS`); a flag wins over the variable,
the variable over the default. The environment is read only in :func:`load_settings`. Secrets come
only from the environment or a mounted file and never reach a log line.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ecg_anomaly.base.errors import ConfigError
from ecg_anomaly.base.kafka import CONNECTION_OPTIONS, KafkaConnection
from ecg_anomaly.base.options import add_options, resolve
from ecg_anomaly.worker.episodes.rules import EpisodeRules
from ecg_anomaly.worker.options import ALL_OPTIONS, OPTIONS


@dataclass(frozen=True)
class WorkerSettings:
    """Resolved worker configuration; see :data:`OPTIONS` for each field's meaning."""

    model: Path
    model_sha256: str
    threshold: float | None
    reload_interval: float
    input_topic: str
    anomaly_topic: str
    scores_topic: str
    dlq_topic: str
    group_id: str
    group_instance_id: str
    client_id: str
    guarantee: str
    transactional_id: str
    auto_offset_reset: str
    max_batch: int
    max_wait_ms: int
    fetch_max_wait_ms: int
    linger_ms: int
    commit_interval_ms: int
    max_record_bytes: int
    max_key_bytes: int
    max_output_bytes: int
    inference_threads: int
    session_timeout_ms: int
    kafka_timeout: float
    broker_timeout: float
    drain_timeout: float
    episodes: bool
    alerts_topic: str
    episode_changelog_topic: str
    episode_open_anomalies: int
    episode_window: int
    episode_close_normal: int
    episode_silence: float
    episode_update_interval: float
    http_host: str
    http_port: int
    liveness_timeout: float
    log_level: str
    kafka: KafkaConnection

    @property
    def exactly_once(self) -> bool:
        return self.guarantee == "exactly-once"

    @property
    def episode_rules(self) -> EpisodeRules:
        return EpisodeRules(
            self.episode_open_anomalies,
            self.episode_window,
            self.episode_close_normal,
            round(self.episode_silence * 1000),
            round(self.episode_update_interval * 1000),
        )

    def public(self) -> dict[str, Any]:
        """Every setting but secrets, for the start-up log line."""
        shown = {f.name: str(getattr(self, f.name)) for f in fields(self) if f.name != "kafka"}
        kafka = self.kafka
        shown.update(
            {f.name: str(getattr(kafka, f.name)) for f in fields(kafka) if not f.name.endswith("password")}
        )
        return shown


def configure(parser: argparse.ArgumentParser) -> None:
    """One flag per option; their values are resolved only when the worker runs."""
    add_options(parser, ALL_OPTIONS)


def load_settings(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> WorkerSettings:
    """Flags, then environment, then defaults → validated :class:`WorkerSettings`."""
    env = os.environ if environ is None else environ
    values = resolve(ALL_OPTIONS, args, env)
    if values["model"] is None:
        raise ConfigError("--model (or ECG_MODEL) is required: the path of the trainer's model.onnx")
    own = {o.name: values[o.name] for o in OPTIONS}
    own["model"] = Path(values["model"])
    own["model_sha256"] = values["model_sha256"].lower()
    hostname = socket.gethostname()
    own["client_id"] = values["client_id"] or f"ecg-worker-{hostname}"
    own["transactional_id"] = values["transactional_id"] or f"{values['group_id']}-{hostname}"
    own["episode_changelog_topic"] = (
        values["episode_changelog_topic"] or f"{values['group_id']}-episodes-changelog"
    )
    kafka = KafkaConnection.from_values({o.name: values[o.name] for o in CONNECTION_OPTIONS}, env)
    settings = WorkerSettings(**own, kafka=kafka)
    _ = settings.episode_rules  # k of n are checked together: a ConfigError now, not at the first batch
    return settings
