"""The secured test broker as the tests use it: who connects how, and the ACLs they are granted.

The broker (``deploy/local/kafka.sh up --secure``) has a PLAINTEXT listener for the admin (a super
user: topics, ACLs, offsets), SASL_SSL with SCRAM-SHA-512 and SSL with client certificates. The
users ``ecg-worker`` and ``ecg-tools`` (each a password and a certificate, one principal
``User:<name>`` either way) have no ACL until a test grants one, for its own topics and group only.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    KafkaAdminClient,
    ResourcePattern,
    ResourceType,
)
from kafka.errors import KafkaError

from ecg_anomaly.base.acls import Acl
from tests.support.broker import LocalBroker


@dataclass(frozen=True)
class SecuredKafka:
    broker: LocalBroker
    admin: KafkaAdminClient  # over the PLAINTEXT listener, as the super user

    @property
    def admin_bootstrap(self) -> str:
        return self.broker.bootstrap

    @property
    def ca(self) -> Path:
        return self.broker.secrets / "ca.crt"

    def file(self, name: str) -> Path:
        return self.broker.secrets / name

    def password(self, user: str) -> str:
        return self.file(f"{user}.password").read_text().strip()

    def scram_flags(self, user: str = "ecg-worker") -> dict[str, str]:
        """A command's connection flags for SASL_SSL with SCRAM-SHA-512 (the password from its file)."""
        return {
            "bootstrap_servers": self.broker.sasl_ssl_bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": user,
            "sasl_password_file": str(self.file(f"{user}.password")),
            "ssl_cafile": str(self.ca),
        }

    def mtls_flags(self, user: str = "ecg-worker") -> dict[str, str]:
        """A command's connection flags for mutual TLS (the client key's password from its file)."""
        return {
            "bootstrap_servers": self.broker.ssl_bootstrap,
            "security_protocol": "SSL",
            "ssl_cafile": str(self.ca),
            "ssl_certfile": str(self.file(f"{user}.crt")),
            "ssl_keyfile": str(self.file(f"{user}.key")),
            "ssl_password_file": str(self.file(f"{user}.key-password")),
        }

    @staticmethod
    def cli(flags: dict[str, str]) -> list[str]:
        """``flags`` as command-line arguments."""
        return [arg for name, value in flags.items() for arg in ("--" + name.replace("_", "-"), value)]

    def kafka_python(self, user: str = "admin") -> dict[str, Any]:
        """kafka-python's settings for SASL_SSL as ``user`` (the tests' independent reader)."""
        return {
            "bootstrap_servers": self.broker.sasl_ssl_bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": user,
            "sasl_plain_password": self.password(user),
            "ssl_cafile": str(self.ca),
        }

    def committed(self, group: str) -> dict[int, int]:
        """``group``'s committed offset per partition (read by the admin); none while its coordinator
        is not settled (the offsets topic of a new broker is still being made or moved)."""
        try:
            offsets = self.admin.list_group_offsets(group).get(group, {})
        except KafkaError as exc:
            if not exc.retriable:
                raise
            return {}
        return {tp.partition: o.offset for tp, o in offsets.items() if o.offset >= 0}

    def grant(self, acls: Iterable[Acl], user: str = "ecg-worker") -> None:
        """ALLOW ``acls`` to ``User:<user>`` from any host; the broker applies them at once."""
        bindings = [
            ACL(
                f"User:{user}",
                "*",
                ACLOperation[acl.operation],
                ACLPermissionType.ALLOW,
                ResourcePattern(
                    ResourceType[acl.resource],
                    acl.name,
                    ACLResourcePatternType.PREFIXED if acl.prefixed else ACLResourcePatternType.LITERAL,
                ),
            )
            for acl in acls
        ]
        result = self.admin.create_acls(bindings)
        assert not result["failed"], result["failed"]


def other_ca(directory: Path) -> Path:
    """A CA certificate that signed nothing the broker has: a client trusting only it must refuse."""
    key, cert = directory / "other-ca.key", directory / "other-ca.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other-ca",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert
