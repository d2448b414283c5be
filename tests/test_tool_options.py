"""The tools' options: each value checked before anything connects; a mistake is one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.broker import free_port
from tests.support.cli import run_cli


# Nothing listens on the bootstrap port and the connect timeout is long: a tool that connected
# before checking its options would take 30 s and exit 1, not 2 at once.
@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["replay", "--rate", "-1"], {}, "--rate: '-1' is not valid (expected zero or more)"),
        (["replay", "--limit", "0"], {}, "--limit: '0' is not valid (expected a positive integer)"),
        (["replay", "--sources", "many"], {}, "--sources: 'many' is not valid (expected an integer)"),
        (["replay", "--encoding", "xml"], {}, "--encoding: 'xml' is not one of: json, binary"),
        (["replay", "--bad-rate", "1.5"], {}, "--bad-rate: '1.5' is not valid (expected a probability"),
        (["replay", "--bad-kinds", "empty_value,late"], {}, "--bad-kinds: 'empty_value,late' is not valid"),
        (["watch", "--limit", "-3"], {}, "--limit: '-3' is not valid (expected a positive integer)"),
        (["watch", "--timeout", "soon"], {}, "--timeout: 'soon' is not valid"),
        (["watch", "--web", "--dlq"], {}, "--web shows anomaly events, not dead letters: drop --dlq"),
        (["watch", "--dlq", "--alerts"], {}, "--dlq and --alerts follow different topics: choose one"),
        (["watch", "--web", "--alerts"], {}, "--web shows anomaly events, not alert records: drop --alerts"),
        (["watch", "--web", "--limit", "5"], {}, "--web serves the page until Ctrl-C: --limit and --timeout"),
        (
            ["watch", "--model", "model.onnx"],
            {},
            "--model and --metrics-url are options of the live page: add",
        ),
        (["watch", "--web", "--metrics-url", "localhost:8080"], {}, "--metrics-url: 'localhost:8080' is not"),
        (["watch", "--web", "--web-port", "70000"], {}, "--web-port: '70000' is not valid (expected a port"),
        (["watch", "--web", "--model", "/no/such.onnx"], {}, "--model: no such file /no/such.onnx"),
        (["redrive", "--reason", "late"], {}, "--reason: 'late' is not one of: empty_value, oversized"),
        (
            ["redrive"],
            {"ECG_KAFKA_SECURITY_PROTOCOL": "TLS"},
            "ECG_KAFKA_SECURITY_PROTOCOL: 'TLS' is not one",
        ),
        (
            ["watch", "--security-protocol", "SASL_SSL"],
            {},
            "--security-protocol SASL_SSL needs --sasl-username and a password",
        ),
        (["replay"], {"ECG_KAFKA_CONNECT_TIMEOUT": "0"}, "ECG_KAFKA_CONNECT_TIMEOUT: '0' is not valid"),
        (["demo", "--kafka-port", "tcp://10.0.0.7:9092"], {}, "--kafka-port: 'tcp://10.0.0.7:9092' is not"),
        (["demo", "--bad-rate", "2"], {}, "--bad-rate: '2' is not valid (expected a probability"),
        (["demo", "--preset", "huge"], {}, "--preset: 'huge' is not one of: tutorial, default, tiny"),
        (["demo", "--rate", "0"], {}, "--rate: '0' is not valid (expected a positive number)"),
        (["demo", "--web-port", "-1"], {}, "--web-port: '-1' is not valid (expected a port number"),
    ],
)
def test_a_bad_value_is_one_line_and_exit_2_before_connecting(
    argv: list[str], env: dict[str, str], message: str, tmp_path: Path
) -> None:
    command, *options = argv
    if command == "demo":  # an existing model (nothing to train) and a port with no broker (none used)
        (tmp_path / "model.onnx").write_bytes(b"")
        options += ["--model", str(tmp_path / "model.onnx"), "--metrics-port", str(free_port())]
        if "--kafka-port" not in options:
            options += ["--kafka-port", str(free_port())]
    else:
        options += ["--bootstrap-servers", f"127.0.0.1:{free_port()}"]
    run = run_cli(command, *options, env={"ECG_KAFKA_CONNECT_TIMEOUT": "30", **env}, timeout=60)
    assert run.returncode == 2, run.err
    assert len(run.err_lines) == 1 and run.err.startswith(f"ecg-anomaly {command}: error: ")
    assert message in run.err and run.out == ""
    assert run.seconds < 20
