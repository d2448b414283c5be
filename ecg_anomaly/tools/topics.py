"""``ecg-anomaly topics``: check the worker's topics on any cluster, or create the missing ones.

Examples::

    ecg-anomaly topics                                   # check: exit 0 when every topic is as planned
    ecg-anomaly topics --create                          # create what is missing, then check the rest
    ecg-anomaly topics --create --replication-factor 1 --min-insync-replicas 1   # a one-broker cluster

The plan is the worker's topics (the same ``ECG_*_TOPIC`` variables as the worker, so run in a worker
pod it checks that pod's topics) with partitions, replication, ``retention.ms`` and
``min.insync.replicas``; its defaults are what ``deploy/k8s/components/strimzi-topics`` declares.
The alert episodes' two topics (the worker's ``--episodes``) are planned too: the alerts topic, and
the state's changelog, compacted, with as many partitions as the input topic.
An existing topic is never changed: a difference is reported (exit 1) for a person to decide, as
adding partitions moves keys and shortening retention deletes data.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from ecg_anomaly.base.errors import ConfigError, EcgAnomalyError
from ecg_anomaly.base.kafka import CONNECTION_OPTIONS, ErrorLog, KafkaConnection, check_cluster, quiet_config
from ecg_anomaly.base.options import Option, add_options, finite, positive, resolve

CLIENT_ID = "ecg-topics"
HOUR_MS = 3_600_000

OPTIONS: tuple[Option, ...] = (
    Option("input_topic", "ECG_INPUT_TOPIC", "ecg.beats", "topic of incoming beats"),
    Option("anomaly_topic", "ECG_ANOMALY_TOPIC", "ecg.anomalies", "topic of anomaly events"),
    Option(
        "scores_topic",
        "ECG_SCORES_TOPIC",
        "",
        "topic for every beat's score, if the worker publishes them (empty: none)",
        default_text="(none)",
    ),
    Option("dlq_topic", "ECG_DLQ_TOPIC", "ecg.beats.dlq", "dead-letter topic"),
    Option(
        "alerts_topic",
        "ECG_ALERTS_TOPIC",
        "ecg.alerts",
        "topic of alert episodes (--alerts-topic '': neither it nor the episodes' changelog)",
    ),
    Option(
        "group_id",
        "ECG_GROUP_ID",
        "ecg-worker",
        "the worker's consumer group, which names the episodes' changelog topic by default",
    ),
    Option(
        "episode_changelog_topic",
        "ECG_EPISODE_CHANGELOG_TOPIC",
        "",
        "the episodes' state: a compacted topic with the input topic's partitions",
        default_text="<group-id>-episodes-changelog",
    ),
    Option(
        "partitions",
        None,
        12,
        "partitions of the input, anomaly, scores, alerts and changelog topics: the most workers that "
        "can share the load",
        int,
        check=positive,
        check_text="a positive integer",
    ),
    Option(
        "dlq_partitions",
        None,
        1,
        "partitions of the dead-letter topic",
        int,
        check=positive,
        check_text="a positive integer",
    ),
    Option(
        "replication_factor",
        None,
        3,
        "copies of each partition",
        int,
        check=positive,
        check_text="a positive integer",
    ),
    Option(
        "min_insync_replicas",
        None,
        2,
        "copies that must have a write before it is acknowledged (min.insync.replicas)",
        int,
        check=positive,
        check_text="a positive integer",
    ),
    Option(
        "retention_hours",
        None,
        168.0,
        "retention of the input, anomaly and alerts topics (hours)",
        finite,
        check=positive,
        check_text="a positive number",
    ),
    Option(
        "scores_retention_hours",
        None,
        24.0,
        "retention of the scores topic (hours)",
        finite,
        check=positive,
        check_text="a positive number",
    ),
    Option(
        "dlq_retention_hours",
        None,
        720.0,
        "retention of the dead-letter topic (hours): time to find the cause and redrive",
        finite,
        check=positive,
        check_text="a positive number",
    ),
    Option(
        "create",
        None,
        False,
        "create the topics that do not exist (existing topics are only checked, never changed)",
        kind="switch",
    ),
)


@dataclass(frozen=True)
class TopicSpec:
    """One topic as planned: what ``CreateTopics`` is asked for and what a check compares."""

    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]

    def describe(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in sorted(self.config.items()))
        return f"{self.partitions} partitions, replication factor {self.replication_factor}, {settings}"


def plan(values: dict[str, Any]) -> list[TopicSpec]:
    """The topics of resolved :data:`OPTIONS` values; a combination that cannot work is a ConfigError."""
    if values["min_insync_replicas"] > values["replication_factor"]:
        raise ConfigError(
            f"--min-insync-replicas {values['min_insync_replicas']} is more than --replication-factor "
            f"{values['replication_factor']}: no write could ever be acknowledged"
        )
    changelog = ""
    if values["alerts_topic"]:
        changelog = values["episode_changelog_topic"] or f"{values['group_id']}-episodes-changelog"
    roles = [
        ("input_topic", values["partitions"], values["retention_hours"]),
        ("anomaly_topic", values["partitions"], values["retention_hours"]),
        ("scores_topic", values["partitions"], values["scores_retention_hours"]),
        ("dlq_topic", values["dlq_partitions"], values["dlq_retention_hours"]),
        ("alerts_topic", values["partitions"], values["retention_hours"]),
    ]
    names = [values[role] for role, _, _ in roles if values[role]] + ([changelog] if changelog else [])
    if len(set(names)) != len(names):
        raise ConfigError(f"the topics must differ: {', '.join(names)}")
    insync = {"min.insync.replicas": str(values["min_insync_replicas"])}
    specs = [
        TopicSpec(
            values[role],
            partitions,
            values["replication_factor"],
            {"retention.ms": str(round(hours * HOUR_MS)), **insync},
        )
        for role, partitions, hours in roles
        if values[role]
    ]
    if changelog:  # the worker's state, one record per source: compacted, never deleted by age
        specs.append(
            TopicSpec(
                changelog,
                values["partitions"],
                values["replication_factor"],
                {"cleanup.policy": "compact", **insync},
            )
        )
    return specs


def follow_the_input(
    specs: list[TopicSpec], values: dict[str, Any], existing: dict[str, int]
) -> list[TopicSpec]:
    """The changelog planned with the partitions the input topic has, when it exists already.

    The worker pairs changelog partition p with input partition p and refuses to start when their
    counts differ: an input a producer auto-created with another count gets a changelog to match
    (the input itself is still reported as differing from the plan).
    """
    input_partitions = existing.get(values["input_topic"])
    if input_partitions is None or not values["alerts_topic"]:
        return specs
    changelog = specs[-1]  # plan() puts it last
    return [*specs[:-1], dataclasses.replace(changelog, partitions=input_partitions)]


def default_plan() -> list[TopicSpec]:
    """The plan with every default (what the Strimzi component declares)."""
    return plan({o.name: o.default for o in OPTIONS})


def differences(
    spec: TopicSpec, partitions: int, replication_factor: int, config: dict[str, str]
) -> list[str]:
    """How an existing topic differs from ``spec``, one phrase each (empty: as planned)."""
    found = []
    if partitions != spec.partitions:
        found.append(f"{partitions} partitions (planned {spec.partitions})")
    if replication_factor != spec.replication_factor:
        found.append(f"replication factor {replication_factor} (planned {spec.replication_factor})")
    for key, wanted in sorted(spec.config.items()):
        if config.get(key) != wanted:
            found.append(f"{key}={config.get(key)} (planned {wanted})")
    return found


def configure(parser: argparse.ArgumentParser) -> None:
    add_options(parser, (*CONNECTION_OPTIONS, *OPTIONS))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    values = resolve((*CONNECTION_OPTIONS, *OPTIONS), args, os.environ)
    specs = plan(values)
    connection = KafkaConnection.from_values({o.name: values[o.name] for o in CONNECTION_OPTIONS}, os.environ)
    existing = check_cluster(connection, CLIENT_ID, tuple(s.name for s in specs))
    specs = follow_the_input(specs, values, existing)

    from confluent_kafka.admin import AdminClient

    admin = AdminClient(quiet_config(connection, CLIENT_ID, ErrorLog()))
    timeout = connection.connect_timeout
    missing = [s for s in specs if s.name not in existing]
    created = _create(admin, missing, timeout) if values["create"] and missing else set()
    present = [s for s in specs if s.name in existing]
    actual = _describe(admin, present, timeout)
    problems = 0
    for spec in specs:
        if spec.name in created:
            print(f"{spec.name}: created ({spec.describe()})")
        elif spec.name not in existing:
            print(f"{spec.name}: missing (planned {spec.describe()}; --create makes it)")
            problems += 1
        elif found := differences(spec, *actual[spec.name]):
            print(f"{spec.name}: differs: {'; '.join(found)}")
            problems += 1
        else:
            print(f"{spec.name}: ok ({spec.describe()})")
    return 1 if problems else 0


def _create(admin: Any, specs: list[TopicSpec], timeout: float) -> set[str]:
    """Create ``specs``; a topic the cluster refuses is one line naming it and the broker's reason."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewTopic

    futures = admin.create_topics(
        [NewTopic(s.name, s.partitions, s.replication_factor, config=s.config) for s in specs],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    refused = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout + 5)
        except KafkaException as exc:
            refused.append(f"{name}: {exc.args[0].str()}")
        except TimeoutError:
            refused.append(f"{name}: no answer within {timeout + 5:g} s")
    if refused:
        raise EcgAnomalyError("the cluster refused to create " + "; ".join(refused))
    return {s.name for s in specs}


def _describe(
    admin: Any, specs: list[TopicSpec], timeout: float
) -> dict[str, tuple[int, int, dict[str, str]]]:
    """Partitions, replication factor (the smallest of any partition) and planned configs of each."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import ConfigResource, ResourceType

    if not specs:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, s.name) for s in specs]
    described = {}
    try:
        metadata = admin.list_topics(timeout=timeout)
        for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
            entries = future.result(timeout=timeout + 5)
            described[resource.name] = {k: entry.value for k, entry in entries.items()}
    except KafkaException as exc:
        raise EcgAnomalyError(f"cannot read the topics' configuration: {exc.args[0].str()}") from None
    except TimeoutError:
        raise EcgAnomalyError(
            f"cannot read the topics' configuration: no answer within {timeout + 5:g} s"
        ) from None
    result = {}
    for spec in specs:
        partitions = metadata.topics[spec.name].partitions.values()
        replication = min((len(p.replicas) for p in partitions), default=0)
        result[spec.name] = (len(partitions), replication, described[spec.name])
    return result
