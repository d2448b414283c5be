"""The worker's least-privilege ACLs on a secured cluster, as data: for the tests, the docs and Strimzi.

A cluster with an authorizer and ``allow.everyone.if.no.acl.found=false`` refuses every request its
ACLs do not allow. :func:`worker_acls` is what one worker principal needs, and nothing more (the
secured-broker tests grant exactly these and leave one out to see each failure); the docs render it
as a table and ``deploy/k8s/components/strimzi-user`` declares the same list as a Strimzi
``KafkaUser`` (a test holds them equal). Kafka's implied operations keep it short: READ and WRITE
imply DESCRIBE on their resource, and since Kafka 3.0 (KIP-679) an idempotent producer needs no
IDEMPOTENT_WRITE on the cluster when it may WRITE to a topic; a transactional producer needs WRITE
on its transactional id instead.
"""

from __future__ import annotations

from dataclasses import dataclass

# Kafka's names (kafka-acls.sh, the admin API) → Strimzi's (KafkaUser spec.authorization.acls)
_STRIMZI_RESOURCE = {"TOPIC": "topic", "GROUP": "group", "TRANSACTIONAL_ID": "transactionalId"}
_STRIMZI_OPERATION = {
    "READ": "Read",
    "WRITE": "Write",
    "DESCRIBE": "Describe",
    "DESCRIBE_CONFIGS": "DescribeConfigs",
    "CREATE": "Create",
}


@dataclass(frozen=True)
class Acl:
    """ALLOW ``operation`` on one resource (``name``, or every name starting with it when prefixed)."""

    resource: str  # TOPIC, GROUP or TRANSACTIONAL_ID
    name: str
    operation: str  # READ, WRITE, DESCRIBE, DESCRIBE_CONFIGS or CREATE
    why: str
    prefixed: bool = False

    def strimzi(self) -> dict[str, object]:
        """This ACL as one entry of a Strimzi ``KafkaUser``'s ``spec.authorization.acls``."""
        resource = {
            "type": _STRIMZI_RESOURCE[self.resource],
            "name": self.name,
            "patternType": "prefix" if self.prefixed else "literal",
        }
        return {"resource": resource, "operations": [_STRIMZI_OPERATION[self.operation]]}


def transactional_id_prefix(group_id: str) -> str:
    """What every default transactional id of the group's workers starts with (``<group>-<hostname>``)."""
    return f"{group_id}-"


def worker_acls(
    input_topic: str,
    anomaly_topic: str,
    scores_topic: str,
    dlq_topic: str,
    group_id: str,
    exactly_once: bool,
    alerts_topic: str = "",
    changelog_topic: str = "",
    create_changelog: bool = False,
) -> tuple[Acl, ...]:
    """Every ACL one worker principal needs; ``scores_topic`` empty when scores are off, ``alerts_topic``
    and ``changelog_topic`` empty when episodes are off; ``create_changelog`` when the worker is to
    create its changelog topic (not when ``ecg-anomaly topics`` or Strimzi made it)."""
    acls = [
        Acl("TOPIC", input_topic, "READ", "consume the beats"),
        Acl("GROUP", group_id, "READ", "join the consumer group and commit its offsets"),
    ]
    outputs = (
        (anomaly_topic, "anomaly events"),
        (scores_topic, "scores"),
        (dlq_topic, "dead letters"),
        (alerts_topic, "alert episodes"),
    )
    for topic, what in outputs:
        if not topic:
            continue
        acls.append(Acl("TOPIC", topic, "WRITE", f"publish {what}"))
        acls.append(
            Acl(
                "TOPIC",
                topic,
                "DESCRIBE_CONFIGS",
                "read the topic's limits (without it Kafka's defaults are assumed)",
            )
        )
    if changelog_topic:
        acls += [
            Acl("TOPIC", changelog_topic, "READ", "episodes: restore the state of assigned partitions"),
            Acl("TOPIC", changelog_topic, "WRITE", "episodes: write the state with each checkpoint"),
            Acl(
                "TOPIC",
                changelog_topic,
                "DESCRIBE_CONFIGS",
                "episodes: check the changelog is compacted; read its limits",
            ),
        ]
        if create_changelog:
            acls.append(
                Acl("TOPIC", changelog_topic, "CREATE", "episodes: create the changelog topic if missing")
            )
    if exactly_once:
        acls.append(
            Acl(
                "TRANSACTIONAL_ID",
                transactional_id_prefix(group_id),
                "WRITE",
                "exactly-once: the transactional producer (default ids `<group id>-<host name>`)",
                prefixed=True,
            )
        )
    return tuple(acls)


def tool_acls(
    input_topic: str,
    anomaly_topic: str,
    dlq_topic: str,
    redrive_group: str,
    watch_group: str,
    alerts_topic: str = "",
    changelog_topic: str = "",
) -> dict[str, tuple[Acl, ...]]:
    """What each command-line tool's principal needs, by command.

    ``watch`` joins no group, but librdkafka's consumer must have a group id and looks up its
    coordinator, which takes DESCRIBE on that group (``ecg-watch``).
    """
    return {
        "replay": (Acl("TOPIC", input_topic, "WRITE", "publish beats"),),
        "watch": (
            Acl("TOPIC", anomaly_topic, "READ", "follow anomaly events"),
            Acl("TOPIC", dlq_topic, "READ", "with --dlq: follow dead letters"),
            *(
                [Acl("TOPIC", alerts_topic, "READ", "with --alerts: follow alert episodes")]
                if alerts_topic
                else []
            ),
            Acl("GROUP", watch_group, "DESCRIBE", "find its group's coordinator (no group is joined)"),
        ),
        "topics": tuple(
            acl
            for topic in (input_topic, anomaly_topic, dlq_topic, alerts_topic, changelog_topic)
            if topic
            for acl in (
                Acl("TOPIC", topic, "DESCRIBE", "see the topic and its partitions"),
                Acl("TOPIC", topic, "DESCRIBE_CONFIGS", "check its retention.ms and min.insync.replicas"),
                Acl("TOPIC", topic, "CREATE", "with --create: create it if missing"),
            )
        ),
        "redrive": (
            Acl("TOPIC", dlq_topic, "READ", "read the dead letters"),
            Acl("GROUP", redrive_group, "READ", "remember how far it got (--group)"),
            Acl("TOPIC", input_topic, "WRITE", "re-send each to its original topic (or --to)"),
        ),
    }
