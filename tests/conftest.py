"""Session-wide real Kafka broker, per-test factories for unique names, workers on fresh topics."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from tests.support.broker import BrokerUnavailable, LocalBroker, docker_engine_answers
from tests.support.secure import SecuredKafka
from tests.support.worker import WorkerProcess


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real broker's bootstrap address. Never skipped: no broker is a failure."""
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        yield env
        return
    with ExitStack() as stack:
        if docker_engine_answers():
            # Confluent Platform 8.1 ships Apache Kafka 4.1; testcontainers drives that image.
            from testcontainers.community.kafka import KafkaContainer

            container = stack.enter_context(KafkaContainer("confluentinc/cp-kafka:8.1.0").with_kraft())
            yield container.get_bootstrap_server()
            return
        try:
            broker = stack.enter_context(LocalBroker())
        except BrokerUnavailable as exc:
            pytest.fail(f"no Kafka broker for the integration tests: {exc}", pytrace=False)
        yield broker.bootstrap


@pytest.fixture(scope="session")
def secured_kafka() -> Iterator[SecuredKafka]:
    """The project's secured broker (``kafka.sh up --secure``), always started from the jars: a broker
    given by ``KAFKA_BOOTSTRAP_SERVERS`` or a container is plain. Never skipped."""
    with ExitStack() as stack:
        try:
            broker = stack.enter_context(LocalBroker(secure=True))
        except BrokerUnavailable as exc:
            pytest.fail(f"no secured Kafka broker for the tests: {exc}", pytrace=False)
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="ecg-tests-secure-admin")
        stack.callback(admin.close)
        yield SecuredKafka(broker, admin)


@pytest.fixture
def secure_topic_factory(secured_kafka: SecuredKafka) -> Callable[..., str]:
    """Create a topic on the secured broker (as its admin) with a unique name."""

    def create(partitions: int = 1, prefix: str = "t", **config: str) -> str:
        name = _unique(prefix)
        secured_kafka.admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, topic_configs=config)]
        )
        return name

    return create


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> Iterator[KafkaAdminClient]:
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="ecg-tests-admin")
    yield admin
    admin.close()


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def topic_factory(kafka_admin: KafkaAdminClient) -> Callable[..., str]:
    """Create a topic with a unique name; ``topic_factory(partitions=3)``."""

    def create(partitions: int = 1, prefix: str = "t", **config: str) -> str:
        name = _unique(prefix)
        kafka_admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, topic_configs=config)]
        )
        return name

    return create


@pytest.fixture
def group_factory() -> Callable[..., str]:
    """A unique consumer-group (or transactional) id per call."""
    return lambda prefix="g": _unique(prefix)


@pytest.fixture(scope="session")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small trained artifact (built once per process, copied per session)."""
    from tests.support.artifact import build_small_artifact

    return build_small_artifact(tmp_path_factory.mktemp("model"))


@pytest.fixture
def worker_factory(
    kafka_bootstrap: str, topic_factory: Callable[..., str], group_factory: Callable[..., str], tmp_path: Path
):
    """Start workers on fresh topics; every one is stopped at the end of the test."""
    started: list[WorkerProcess] = []

    def start(model: Path, topic: str | None = None, partitions: int = 3, **options: object) -> WorkerProcess:
        topics = {
            "anomaly_topic": topic_factory(partitions=partitions, prefix="anomalies"),
            "scores_topic": topic_factory(partitions=partitions, prefix="scores"),
            "dlq_topic": topic_factory(partitions=1, prefix="dlq"),
        }
        topics.update(options)  # type: ignore[arg-type]
        worker = WorkerProcess(
            kafka_bootstrap,
            model,
            topic or topic_factory(partitions=partitions, prefix="beats"),
            group_factory("worker"),
            tmp_path / f"worker-{len(started)}.log",
            **topics,
        )
        started.append(worker.start())
        return worker

    yield start
    for worker in started:
        worker.stop()
