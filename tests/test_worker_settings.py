"""The worker's settings: flags over environment over defaults, validation, secrets."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from ecg_anomaly.base.errors import ConfigError
from ecg_anomaly.worker.settings import configure, load_settings


def _settings(argv: list[str], env: dict[str, str] | None = None):
    parser = argparse.ArgumentParser()
    configure(parser)
    return load_settings(parser.parse_args(argv), env or {})


def test_flag_beats_env_beats_default() -> None:
    s = _settings(["--model", "m.onnx", "--max-batch", "64"], {"ECG_MAX_BATCH": "32", "ECG_LINGER_MS": "9"})
    assert (s.max_batch, s.linger_ms, s.fetch_max_wait_ms) == (64, 9, 20)
    assert s.model == Path("m.onnx") and not s.exactly_once


@pytest.mark.parametrize(
    ("argv", "env", "names"),
    [
        (["--max-batch", "0"], {}, "--max-batch"),
        (["--threshold", "nan"], {}, "--threshold"),
        ([], {"ECG_HTTP_PORT": "http"}, "ECG_HTTP_PORT"),
        (["--model-sha256", "abc"], {}, "--model-sha256"),
        ([], {"ECG_GUARANTEE": "maybe-once"}, "ECG_GUARANTEE"),
        (["--security-protocol", "SASL_SSL", "--sasl-username", "u"], {}, "--security-protocol"),
        (["--ssl-cafile", "/no/such/ca.pem"], {}, "--ssl-cafile"),
        (["--episode-open-anomalies", "9", "--episode-window", "8"], {}, "--episode-open-anomalies 9 of"),
        ([], {"ECG_EPISODES": "maybe"}, "ECG_EPISODES"),
        (["--episode-silence", "0"], {}, "--episode-silence"),
    ],
)
def test_invalid_options_name_the_option(argv: list[str], env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        _settings(["--model", "m.onnx", *argv], env)


def test_model_is_required() -> None:
    with pytest.raises(ConfigError, match="--model"):
        _settings([])


def test_secrets_come_from_env_or_file_and_never_show(tmp_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text("file-pw-123\n")
    s = _settings(
        [
            "--model",
            "m",
            "--security-protocol",
            "SASL_SSL",
            "--sasl-mechanism",
            "SCRAM-SHA-512",
            "--sasl-username",
            "svc",
            "--sasl-password-file",
            str(secret_file),
        ],
        {"ECG_KAFKA_SSL_PASSWORD": "env-pw-456"},
    )
    config = s.kafka.client_config("w")
    assert config["sasl.password"] == "file-pw-123"
    assert config["ssl.key.password"] == "env-pw-456"
    assert (config["sasl.mechanism"], config["sasl.username"]) == ("SCRAM-SHA-512", "svc")
    for shown in (repr(s), str(s.public())):
        assert "file-pw-123" not in shown and "env-pw-456" not in shown
