"""The worker's one settings object, built once from flags and environment variables.

Every option has a flag and an ``ECG_*`` environment variable; a flag wins over
the variable, the variable over the default. The environment is read only in
:func:`load_settings`. Secrets (SASL password, SSL key password) come only from
the environment or a mounted file, never from a flag, and are held in
:class:`Secret` so they never reach a log line or a repr.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ecg_anomaly.errors import EcgAnomalyError
from worker.options import OPTIONS, SECRETS, Option


class ConfigError(EcgAnomalyError):
    """An invalid option. The CLI prints it and exits with code 2."""


class Secret:
    """A string that never shows itself in repr, str or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


@dataclass(frozen=True)
class WorkerSettings:
    """Resolved worker configuration; see :data:`OPTIONS` for each field's meaning."""

    model: Path
    model_sha256: str
    threshold: float | None
    reload_interval: float
    bootstrap_servers: str
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
    http_host: str
    http_port: int
    liveness_timeout: float
    log_level: str
    security_protocol: str
    sasl_mechanism: str
    sasl_username: str
    sasl_password_file: str
    ssl_cafile: str
    ssl_certfile: str
    ssl_keyfile: str
    ssl_password_file: str
    ssl_check_hostname: bool
    sasl_password: Secret | None = None
    ssl_password: Secret | None = None

    @property
    def exactly_once(self) -> bool:
        return self.guarantee == "exactly-once"

    def public(self) -> dict[str, Any]:
        """Every setting except secrets, for the start-up log line."""
        hidden = {name for name, _, _ in SECRETS}
        return {f.name: str(getattr(self, f.name)) for f in fields(self) if f.name not in hidden}


def configure(parser: argparse.ArgumentParser) -> None:
    """Add one flag per option. Defaults stay None so the environment can fill them in."""
    for option in OPTIONS:
        env_note = f" [env {option.env}; default {option.default!r}]"
        kwargs: dict[str, Any] = {"dest": option.name, "default": None, "help": option.help + env_note}
        if option.choices:
            kwargs["choices"] = option.choices
        parser.add_argument(option.flag, **kwargs)


def load_settings(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> WorkerSettings:
    """Flags, then environment, then defaults → validated :class:`WorkerSettings`."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for option in OPTIONS:
        raw = getattr(args, option.name, None)
        source = option.flag
        if raw is None and env.get(option.env, "") != "":
            raw, source = env[option.env], option.env
        values[option.name] = option.default if raw is None else _convert(option, raw, source)
    if values["model"] is None:
        raise ConfigError("--model (or ECG_MODEL) is required: the path of the trainer's model.onnx")
    values["model"] = Path(values["model"])
    values["model_sha256"] = values["model_sha256"].lower()
    hostname = socket.gethostname()
    values["client_id"] = values["client_id"] or f"ecg-worker-{hostname}"
    values["transactional_id"] = values["transactional_id"] or f"{values['group_id']}-{hostname}"
    for field_name, env_name, file_option in SECRETS:
        values[field_name] = _secret(values[file_option], env.get(env_name, ""), file_option)
    _check_security(values)
    return WorkerSettings(**values)


def _convert(option: Option, raw: str, source: str) -> Any:
    if option.choices and raw not in option.choices:
        raise ConfigError(f"{source}: {raw!r} is not one of {', '.join(option.choices)}")
    try:
        value = option.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{source}: {raw!r} is not valid ({exc})") from exc
    if option.check is not None and not option.check(value):
        raise ConfigError(f"{source}: {raw!r} is not valid (expected {option.check_text})")
    return value


def _secret(path: str, env_value: str, file_option: str) -> Secret | None:
    if path:
        try:
            return Secret(Path(path).read_text().strip())
        except OSError as exc:
            flag = "--" + file_option.replace("_", "-")
            raise ConfigError(f"{flag}: cannot read {path} ({exc.strerror})") from exc
    return Secret(env_value) if env_value else None


def _check_security(values: dict[str, Any]) -> None:
    if values["security_protocol"].startswith("SASL") and not (
        values["sasl_username"] and values["sasl_password"]
    ):
        raise ConfigError(
            "--security-protocol: SASL needs --sasl-username and a password "
            "(ECG_KAFKA_SASL_PASSWORD or --sasl-password-file)"
        )
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if values[name] and not Path(values[name]).is_file():
            raise ConfigError(f"--{name.replace('_', '-')}: no such file {values[name]}")
