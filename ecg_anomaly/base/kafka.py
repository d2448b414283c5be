"""How every command connects to Kafka: one set of options, one settings object, one client config.

The worker and the tools (replay, watch, redrive, demo, topics) take the same flags and environment
variables for the cluster and its security (:data:`CONNECTION_OPTIONS`) and build their
confluent-kafka clients from one :class:`KafkaConnection`. Secrets (the SASL password, the client
key's password) come only from an environment variable or a mounted file, never from a flag, and
are held in :class:`~ecg_anomaly.base.options.Secret` so that no log line or repr shows them.

:func:`explain` turns what librdkafka reports when a connection fails (authentication, TLS
verification, an unreachable address, a missing ACL) into one line that says what to fix.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecg_anomaly.base.errors import ConfigError, EcgAnomalyError
from ecg_anomaly.base.options import Option, Secret, boolean, finite, positive

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

CONNECTION_OPTIONS: tuple[Option, ...] = (
    Option(
        "bootstrap_servers",
        "ECG_BOOTSTRAP_SERVERS",
        "localhost:9092",
        "Kafka bootstrap servers, host:port[,...]",
    ),
    Option(
        "security_protocol",
        "ECG_KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        "Kafka security protocol",
        choices=PROTOCOLS,
    ),
    Option("sasl_mechanism", "ECG_KAFKA_SASL_MECHANISM", "PLAIN", "SASL mechanism", choices=MECHANISMS),
    Option("sasl_username", "ECG_KAFKA_SASL_USERNAME", "", "SASL user name"),
    Option(
        "sasl_password_file",
        "ECG_KAFKA_SASL_PASSWORD_FILE",
        "",
        "file holding the SASL password (or set ECG_KAFKA_SASL_PASSWORD; never a flag)",
    ),
    Option(
        "ssl_cafile",
        "ECG_KAFKA_SSL_CAFILE",
        "",
        "CA bundle (PEM) to verify the brokers (default: the system's)",
    ),
    Option("ssl_certfile", "ECG_KAFKA_SSL_CERTFILE", "", "client certificate (PEM) for mutual TLS"),
    Option("ssl_keyfile", "ECG_KAFKA_SSL_KEYFILE", "", "client private key (PEM) for mutual TLS"),
    Option(
        "ssl_password_file",
        "ECG_KAFKA_SSL_PASSWORD_FILE",
        "",
        "file holding the client key's password (or set ECG_KAFKA_SSL_PASSWORD; never a flag)",
    ),
    Option(
        "ssl_check_hostname",
        "ECG_KAFKA_SSL_CHECK_HOSTNAME",
        True,
        "verify that the broker's certificate names the host connected to",
        boolean,
    ),
    Option(
        "connect_timeout",
        "ECG_KAFKA_CONNECT_TIMEOUT",
        10.0,
        "seconds to wait for the cluster's first answer before giving up with the reason",
        finite,
        check=positive,
        check_text="a positive number",
    ),
)

# (settings field, environment variable holding it, option naming a file holding it)
SECRETS = (
    ("sasl_password", "ECG_KAFKA_SASL_PASSWORD", "sasl_password_file"),
    ("ssl_password", "ECG_KAFKA_SSL_PASSWORD", "ssl_password_file"),
)


@dataclass(frozen=True)
class KafkaConnection:
    """A cluster and how to authenticate to it; :meth:`client_config` is librdkafka's view of it."""

    bootstrap_servers: str = "localhost:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    sasl_password: Secret | None = None
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_password: Secret | None = None
    ssl_check_hostname: bool = True
    connect_timeout: float = 10.0

    @classmethod
    def from_values(cls, values: Mapping[str, Any], environ: Mapping[str, str]) -> KafkaConnection:
        """From :data:`CONNECTION_OPTIONS`' resolved values; secrets from their file or variable."""
        fields = {o.name: values[o.name] for o in CONNECTION_OPTIONS if not o.name.endswith("_password_file")}
        for field, env_name, file_option in SECRETS:
            fields[field] = _secret(values[file_option], environ.get(env_name, ""), file_option)
        connection = cls(**fields)
        connection.check()
        return connection

    def check(self) -> None:
        """Refuse combinations that cannot connect, before any client is made."""
        if self.security_protocol.startswith("SASL") and not (self.sasl_username and self.sasl_password):
            raise ConfigError(
                f"--security-protocol {self.security_protocol} needs --sasl-username and a password "
                "(ECG_KAFKA_SASL_PASSWORD or --sasl-password-file)"
            )
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ConfigError(f"--{name.replace('_', '-')}: no such file {path}")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ConfigError("--ssl-certfile and --ssl-keyfile go together (mutual TLS needs both)")
        if (self.ssl_cafile or self.ssl_certfile) and not self.security_protocol.endswith("SSL"):
            raise ConfigError(
                f"--ssl-cafile/--ssl-certfile are for --security-protocol SSL or SASL_SSL, "
                f"not {self.security_protocol}"
            )

    def client_config(self, client_id: str) -> dict[str, Any]:
        """librdkafka's connection and security properties (secrets revealed only here)."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": client_id,
            "security.protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username
            if self.sasl_password is not None:
                config["sasl.password"] = self.sasl_password.reveal()
        if self.security_protocol.endswith("SSL"):
            config["ssl.endpoint.identification.algorithm"] = "https" if self.ssl_check_hostname else "none"
            for field, prop in (
                ("ssl_cafile", "ssl.ca.location"),
                ("ssl_certfile", "ssl.certificate.location"),
                ("ssl_keyfile", "ssl.key.location"),
            ):
                if getattr(self, field):
                    config[prop] = getattr(self, field)
            if self.ssl_password is not None:
                config["ssl.key.password"] = self.ssl_password.reveal()
        return config

    def describe(self) -> str:
        """Where and how, for messages: ``host:port (SASL_SSL, SCRAM-SHA-512 as ecg-worker)``."""
        how = self.security_protocol
        if self.security_protocol.startswith("SASL"):
            how += f", {self.sasl_mechanism} as {self.sasl_username}"
        elif self.ssl_certfile:
            how += ", client certificate"
        return f"{self.bootstrap_servers} ({how})"


def _secret(path: str, env_value: str, file_option: str) -> Secret | None:
    if path:
        try:
            return Secret(Path(path).read_text().strip())
        except OSError as exc:
            flag = "--" + file_option.replace("_", "-")
            raise ConfigError(f"{flag}: cannot read {path} ({exc.strerror})") from exc
    return Secret(env_value) if env_value else None


# --- failures, in words ----------------------------------------------------------------------------

# librdkafka error names → what they mean for the person running the command
_CAUSES = {
    "_AUTHENTICATION": "authentication failed: check the SASL user name, password and mechanism "
    "(or the client certificate)",
    "SASL_AUTHENTICATION_FAILED": "authentication failed: check the SASL user name, password and mechanism",
    "_SSL": "TLS failed: the broker's certificate is not signed by --ssl-cafile's CA, names another host "
    "(--ssl-check-hostname), or the broker refused the client certificate",
    "_RESOLVE": "the host name does not resolve",
    "_TRANSPORT": "no broker answers at that address (or it speaks another protocol: check "
    "--security-protocol)",
    "_ALL_BROKERS_DOWN": "no broker answers at that address",
    "TOPIC_AUTHORIZATION_FAILED": "not authorised for a topic (a missing ACL)",
    "GROUP_AUTHORIZATION_FAILED": "not authorised for the consumer group (a missing ACL)",
    "CLUSTER_AUTHORIZATION_FAILED": "not authorised for the cluster operation (a missing ACL)",
    "TRANSACTIONAL_ID_AUTHORIZATION_FAILED": "not authorised for the transactional id (a missing "
    "WRITE ACL on the TransactionalId or its prefix)",
}
_PRIORITY = list(_CAUSES)  # the first matching kind is the most telling (authentication over transport)


def explain(errors: list[Any]) -> str | None:
    """The most telling of librdkafka's errors (``KafkaError``) as one line, with its own text."""
    by_name = {_kind(error): error for error in errors}
    for name in _PRIORITY:
        if name in by_name:
            return f"{_CAUSES[name]} ({by_name[name].str()})"
    if errors:
        return f"{errors[-1].str()} ({errors[-1].name()})"
    return None


def _kind(error: Any) -> str:
    """The error's name; a TLS alert from the broker (e.g. it wants a client certificate) comes as a
    transport failure, and is a TLS failure."""
    name = str(error.name())
    return "_SSL" if name == "_TRANSPORT" and "SSL routines" in error.str() else name


class ErrorLog:
    """An ``error_cb`` that keeps librdkafka's last errors, to explain a failure that follows them.

    ``brokers_down`` is set when librdkafka reports that no broker answers (``_ALL_BROKERS_DOWN``);
    there is no event for their return, so whoever clears it asks the cluster again
    (:func:`check_cluster`) before believing it is back.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.errors: list[Any] = []
        self.brokers_down = threading.Event()

    def __call__(self, error: Any) -> None:
        with self._lock:
            self.errors = [*self.errors[-19:], error]
        if error.name() == "_ALL_BROKERS_DOWN":
            self.brokers_down.set()


def quiet_config(connection: KafkaConnection, client_id: str, errors: ErrorLog) -> dict[str, Any]:
    """A command's client: the connection, librdkafka's own log lines off, its errors kept in ``errors``.

    librdkafka logs to stderr by default, a line per failed reconnect (about 20 a second while a
    broker is down); a command reports a failure as one line instead (:func:`explain`). The worker
    routes those log lines into its JSON log and does not use this.
    """
    return {**connection.client_config(client_id), "log_level": 0, "error_cb": errors}


def check_cluster(
    connection: KafkaConnection, client_id: str, topics: tuple[str, ...] = ()
) -> dict[str, int]:
    """Wait up to ``connect_timeout`` for the cluster; the partition count of each of ``topics``.

    A cluster that does not answer (or refuses us) within the timeout is one
    :class:`~ecg_anomaly.base.errors.EcgAnomalyError` line naming the address and the cause. A topic
    that does not exist is absent from the result (the caller decides whether that is an error).
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    errors = ErrorLog()
    admin = AdminClient(quiet_config(connection, client_id, errors))
    try:
        metadata = admin.list_topics(timeout=connection.connect_timeout)
    except KafkaException as exc:
        admin.poll(0)  # the error callbacks run only here: what librdkafka met while it tried (TLS, SASL)
        cause = explain([*errors.errors, exc.args[0]]) if exc.args else explain(errors.errors)
        raise EcgAnomalyError(
            f"cannot reach Kafka at {connection.describe()} within {connection.connect_timeout:g} s: {cause}"
        ) from None
    found = {}
    for topic in topics:
        info = metadata.topics.get(topic)
        if info is not None and info.error is None:
            found[topic] = len(info.partitions)
    return found


def topic_partitions(connection: KafkaConnection, client_id: str, topic: str) -> int:
    """How many partitions ``topic`` has; an unreachable cluster or a missing topic is one line."""
    found = check_cluster(connection, client_id, (topic,))
    if topic not in found:
        hidden = "" if connection.security_protocol == "PLAINTEXT" else " (or this user may not DESCRIBE it)"
        raise EcgAnomalyError(f"topic {topic} does not exist at {connection.describe()}{hidden}")
    return found[topic]


def watermarks(consumer: Any, topic: str, partitions: int, timeout: float) -> dict[int, tuple[int, int]]:
    """Each partition's (low, high) offsets as ``consumer``'s isolation level sees them.

    With ``read_committed`` the high mark is the last stable offset: records of a transaction
    still open are beyond it. A partition whose leader is not known yet (a topic created a moment
    ago) is asked again until ``timeout``.
    """
    from confluent_kafka import KafkaException, TopicPartition

    deadline = time.monotonic() + timeout
    marks: dict[int, tuple[int, int]] = {}
    for partition in range(partitions):
        while partition not in marks:
            error = None
            left = max(deadline - time.monotonic(), 0.1)
            try:
                found = consumer.get_watermark_offsets(TopicPartition(topic, partition), left, cached=False)
            except KafkaException as exc:
                found, error = None, exc.args[0]
            if found is not None:
                marks[partition] = found
            elif time.monotonic() >= deadline:
                cause = explain([error]) if error is not None else "no answer"
                raise EcgAnomalyError(
                    f"cannot read the offsets of {topic} [{partition}] within {timeout:g} s: {cause}"
                )
            else:
                time.sleep(0.2)
    return marks
