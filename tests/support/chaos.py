"""Shared set-up of the chaos scenarios: topics, supervised workers, a feed, and the verdict line."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

from kafka.admin import KafkaAdminClient, NewTopic

from tests.support.chaos_checker import Verdict, check, committed_lag, feed, group_done
from tests.support.supervisor import Supervisor
from tests.support.worker import WorkerProcess, wait_for


class ChaosRun:
    """One scenario: fresh topics on ``bootstrap``, a group, workers under :class:`Supervisor`s."""

    def __init__(
        self,
        bootstrap: str,
        model: Path,
        log_dir: Path,
        guarantee: str = "exactly-once",
        partitions: int = 6,
        input_config: dict[str, str] | None = None,
        **options: Any,
    ) -> None:
        self.bootstrap = bootstrap
        self.model = model
        self.log_dir = log_dir
        self.guarantee = guarantee
        tag = uuid.uuid4().hex[:8]
        self.group = f"chaos-{tag}"
        self.topics = {
            "input": f"chaos-beats-{tag}",
            "anomaly_topic": f"chaos-anomalies-{tag}",
            "scores_topic": f"chaos-scores-{tag}",
            "dlq_topic": f"chaos-dlq-{tag}",
        }
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="chaos-admin")
        try:
            admin.create_topics(
                [
                    NewTopic(t, partitions, 1, topic_configs=(input_config or {}) if role == "input" else {})
                    for role, t in self.topics.items()
                ]
            )
        finally:
            admin.close()
        self.options: dict[str, Any] = {
            "anomaly_topic": self.topics["anomaly_topic"],
            "scores_topic": self.topics["scores_topic"],
            "dlq_topic": self.topics["dlq_topic"],
            "guarantee": guarantee,
            "session_timeout_ms": 6000,
            "max_batch": 200,
            **options,
        }
        self.supervisors: list[Supervisor] = []
        self.started = time.monotonic()
        self.fed = 0
        self._feeder: threading.Thread | None = None
        self.feed_error: BaseException | None = None

    @property
    def exactly_once(self) -> bool:
        return self.guarantee == "exactly-once"

    def supervise(self, name: str = "w0", liveness_grace: float = 30.0, **extra: Any) -> Supervisor:
        """A supervised worker with static membership ``{group}-{name}`` and its own transactional id."""
        options = {
            **self.options,
            "group_instance_id": f"{self.group}-{name}",
            "transactional_id": f"{self.group}-{name}-tx",
            **extra,
        }

        def make(n: int) -> WorkerProcess:
            log = self.log_dir / f"{name}-{n}.log"
            return WorkerProcess(self.bootstrap, self.model, self.topics["input"], self.group, log, **options)

        supervisor = Supervisor(make, liveness_grace=liveness_grace)
        self.supervisors.append(supervisor)
        return supervisor

    def start_feed(self, total: int, rate: float, bad_every: int = 997) -> None:
        def run() -> None:
            try:
                self.fed = feed(self.bootstrap, self.topics["input"], total, rate, bad_every)
            except BaseException as exc:  # surfaced by wait_feed(), not lost in the thread
                self.feed_error = exc
                raise

        self.total = total
        self._feeder = threading.Thread(target=run, name="feed", daemon=True)
        self._feeder.start()

    def feeding(self) -> bool:
        return self._feeder is not None and self._feeder.is_alive()

    def wait_feed(self) -> None:
        assert self._feeder is not None
        self._feeder.join()
        if self.feed_error is not None:
            raise AssertionError("the feed failed") from self.feed_error

    def wait_lag_zero(self, timeout: float) -> float:
        """Seconds until the group committed every input offset (bounded by ``timeout``)."""
        start = time.monotonic()
        wait_for(
            group_done(self.bootstrap, self.group, self.topics["input"], self.total),
            timeout,
            "every input offset committed",
            interval=1.0,
        )
        return time.monotonic() - start

    def lag_zero_within(self, bound: float, settle: float = 900.0) -> float | None:
        """Seconds until lag 0 if within ``bound``, else None, after waiting up to ``settle`` more
        so the checker still sees every outcome (a pass criterion, reported rather than raised)."""
        try:
            return self.wait_lag_zero(bound)
        except AssertionError:
            self.wait_lag_zero(settle)
            return None

    def lag(self) -> dict[int, int]:
        return committed_lag(self.bootstrap, self.group, self.topics["input"])

    def stop_all(self) -> list[int]:
        return [s.stop() for s in self.supervisors]

    def verdict(self) -> Verdict:
        return check(self.bootstrap, self.topics, committed_only=True)

    def report(self, title: str, verdict: Verdict, passed: bool, **extra: object) -> str:
        """Print the scenario's verdict line (``make chaos`` runs pytest with ``-s``) and return it."""
        fields = " ".join(f"{k}={v:.1f}s" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items())
        line = (
            f"chaos {title} {self.guarantee}: {'PASS' if passed else 'FAIL'} {verdict.counts()} "
            f"{fields} wall={time.monotonic() - self.started:.0f}s"
        )
        print("\n" + line, flush=True)
        return line
