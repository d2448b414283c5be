"""HTTP endpoints: ``/metrics`` (Prometheus), ``/healthz`` (liveness), ``/readyz`` (readiness).

Liveness is only "the loop is turning" (heartbeat age). Readiness is "this pod
can do its job": model loaded, broker reachable, consumer group joined (a
rebalance completed, whether or not it gave this member a partition), the loop
turning and not stuck in a Kafka call, and its outputs not refused for want of
an ACL. Not "owns a partition": during a rollout
at replicas = partitions the surge pod is an idle member, and a pod that is
never ready stalls the rollout. The loop writes the state, the server thread
reads it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ecg_anomaly.worker.metrics import WorkerMetrics

BLOCKED_NOT_READY = 5.0  # seconds inside one Kafka call (e.g. a commit to a dead broker) → not ready


class HealthState:
    def __init__(self, liveness_timeout: float, kafka_busy_for: Callable[[], float] = lambda: 0.0) -> None:
        self.liveness_timeout = liveness_timeout
        self._heartbeat = time.monotonic()
        self.model_loaded = False
        self.broker_connected = False
        self.joined = False  # a rebalance completed (maybe without partitions for this member)
        self.outputs_denied = False  # the broker refuses this principal's writes (an ACL is missing)
        self.kafka_busy_for = kafka_busy_for  # the loop cannot update the rest while blocked in a call

    def beat(self) -> None:
        self._heartbeat = time.monotonic()

    def heartbeat_age(self) -> float:
        return time.monotonic() - self._heartbeat

    def live(self) -> bool:
        return self.heartbeat_age() < self.liveness_timeout

    def ready(self) -> bool:
        return (
            self.live()
            and self.model_loaded
            and self.broker_connected
            and self.joined
            and not self.outputs_denied
            and self.kafka_busy_for() < BLOCKED_NOT_READY
        )

    def describe(self) -> str:
        return (
            f"heartbeat_age={self.heartbeat_age():.2f}s model_loaded={self.model_loaded} "
            f"broker_connected={self.broker_connected} joined={self.joined} "
            f"outputs_denied={self.outputs_denied} kafka_call_seconds={self.kafka_busy_for():.1f}\n"
        )


class HealthServer:
    def __init__(self, host: str, port: int, state: HealthState, metrics: WorkerMetrics) -> None:
        handler = _handler(state, metrics)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(state: HealthState, metrics: WorkerMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._send(200 if state.live() else 503, state.describe().encode())
            elif path == "/readyz":
                self._send(200 if state.ready() else 503, state.describe().encode())
            else:
                self._send(404, b"not found\n")

        def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # probes are not events of note
            pass

    return Handler
