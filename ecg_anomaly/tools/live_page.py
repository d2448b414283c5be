"""The live page that ``ecg-anomaly demo`` and ``ecg-anomaly watch --web`` serve on 127.0.0.1.

One plain HTML page with a script (package data under ``static/live``, no build step) polls two JSON
endpoints: ``/api/stats`` (beats/s, anomaly rate and p99 latency from the worker's own ``/metrics``,
over the last :data:`WINDOW` seconds of scrapes; flagged beats per source from the anomaly topic)
and ``/api/beats`` (the latest flagged beats, read back from the input topic and rescored for their
per-sample error: :mod:`ecg_anomaly.tools.beat_lookup`). The standard library's threaded HTTP
server runs on a thread; it and the anomaly-topic follower stop with the command's ``ExitStack``.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from ecg_anomaly.base.errors import ConfigError, EcgAnomalyError
from ecg_anomaly.base.kafka import KafkaConnection
from ecg_anomaly.base.options import Option
from ecg_anomaly.tools.beat_lookup import BeatLookup, Rescorer
from ecg_anomaly.tools.live_events import EventFollower, LiveEvents
from ecg_anomaly.tools.live_stats import (
    Snapshot,
    anomaly_rate,
    beats_per_second,
    histogram_quantile,
    scrape,
    window,
)

HOST = "127.0.0.1"
WINDOW = 10.0  # seconds of scrapes the rates and the p99 are computed over
KEEP = 6  # flagged beats drawn
SOURCES = 20  # rows of the per-source table: a production topic may name thousands of patients
STATIC = {  # path → (file under static/live, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/live.js": ("live.js", "text/javascript; charset=utf-8"),
    "/live.css": ("live.css", "text/css; charset=utf-8"),
}


def port_or_any(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ValueError("expected a port number, 1-65535, or 0 for any free port")
    return int(text)


def metrics_url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL, e.g. http://127.0.0.1:8080/metrics")
    return text


WEB_PORT_HELP = "the live page's port on 127.0.0.1 (0 = any free)"
# watch's options for the page (``ecg-anomaly watch --web``).
WATCH_OPTIONS: tuple[Option, ...] = (
    Option("web", None, False, "serve the live page instead of printing lines", kind="switch"),
    Option("web_port", None, 8088, f"with --web: {WEB_PORT_HELP}", port_or_any),
    Option(
        "model",
        None,
        None,
        "with --web: the model.onnx to rescore flagged beats with for their per-sample error",
        Path,
        default_text="(none: the page shows the error's window only)",
    ),
    Option(
        "metrics_url",
        None,
        None,
        "with --web: a worker's /metrics URL, for beats/s, anomaly rate and p99 latency",
        metrics_url,
        default_text="(none)",
    ),
)


def check_watch_values(values: dict[str, Any]) -> None:
    """watch's page options make sense together (before anything connects)."""
    if not values["web"]:
        if values["model"] is not None or values["metrics_url"] is not None:
            raise ConfigError("--model and --metrics-url are options of the live page: add --web")
        return
    if values["dlq"]:
        raise ConfigError("--web shows anomaly events, not dead letters: drop --dlq")
    if values["alerts"]:
        raise ConfigError("--web shows anomaly events, not alert records: drop --alerts")
    if values["limit"] is not None or values["timeout"] is not None:
        raise ConfigError("--web serves the page until Ctrl-C: --limit and --timeout do not apply")


class MetricsWindow:
    """The worker's numbers over the last :data:`WINDOW` seconds, scraped when the page asks."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._snapshots: collections.deque[Snapshot] = collections.deque()

    def read(self) -> dict[str, Any]:
        if self.url is None:
            return {"url": None, "error": None, "numbers": None}
        with self._lock:  # one scrape at a time: the snapshots stay in time order
            try:
                current = scrape(self.url, time.monotonic(), timeout=2.0)
            except OSError as exc:
                return {"url": self.url, "error": f"cannot read {self.url}: {exc}", "numbers": None}
            if self._snapshots and current.consumed < self._snapshots[-1].consumed:
                self._snapshots.clear()  # the worker restarted: its counters began again
            self._snapshots.append(current)
            while len(self._snapshots) > 2 and current.at - self._snapshots[1].at >= WINDOW:
                self._snapshots.popleft()
            oldest = self._snapshots[0]
        return {"url": self.url, "error": None, "numbers": numbers(current, oldest)}


def numbers(current: Snapshot, oldest: Snapshot) -> dict[str, Any]:
    """What the page's tiles show; the rates and p99 are None until two scrapes span some time."""
    seconds = current.at - oldest.at
    precision, recall = current.precision_recall()
    return {
        "window_seconds": seconds,
        "beats_per_second": beats_per_second(current, oldest) if seconds > 0 else None,
        "anomaly_rate": anomaly_rate(current, oldest) if seconds > 0 else None,
        "p99_seconds": histogram_quantile(0.99, window(current.latency, oldest.latency))
        if seconds > 0
        else None,
        "consumed": current.consumed,
        "scored": current.normal + current.anomalies,
        "anomalies": current.anomalies,
        "dead_letters": current.dead_letter_total,
        "lag": current.lag,
        "precision": precision,
        "recall": recall,
        "episodes_open": current.episodes.open,  # the page shows them when the worker has --episodes
        "episodes_opened": current.episodes.records.get("opened", 0.0),
        "episodes_closed": sum(current.episodes.closed.values()),
    }


class LivePage:
    """The page's state and server; :meth:`start` serves it until the caller's ``ExitStack`` closes."""

    def __init__(
        self,
        connection: KafkaConnection,
        topic: str,
        model: Path | None,
        metrics: str | None,
        from_beginning: bool = False,
        episodes: bool = False,
    ) -> None:
        """``episodes``: the worker runs with ``--episodes``, so the page shows its open episodes."""
        self.connection = connection
        self.episodes = episodes
        self.topic = topic
        self.from_beginning = from_beginning
        self.rescorer = Rescorer(model) if model is not None else None
        self.events = LiveEvents(KEEP)
        self.metrics = MetricsWindow(metrics)
        self.lookup = BeatLookup(connection, self.rescorer)
        self._follower: EventFollower | None = None

    def start(self, stack: ExitStack, port: int) -> str:
        """Follow the topic and serve on 127.0.0.1:``port`` (0: any free); the page's URL."""
        self._follower = EventFollower(self.connection, self.topic, self.events, self.from_beginning)
        stack.callback(self._follower.stop)
        stack.callback(self.lookup.close)
        handler = type("Handler", (_Handler,), {"page": self})
        try:
            server = ThreadingHTTPServer((HOST, port), handler)
        except OSError as exc:
            raise EcgAnomalyError(f"the live page cannot listen on {HOST}:{port}: {exc.strerror}") from None
        server.daemon_threads = True
        stack.callback(server.server_close)
        threading.Thread(target=server.serve_forever, name="live-page-http", daemon=True).start()
        stack.callback(server.shutdown)
        self._follower.start()
        return f"http://{HOST}:{server.server_address[1]}/"

    @property
    def failure(self) -> str | None:
        """Why the anomaly topic can no longer be read, once that happened."""
        return self._follower.failure if self._follower is not None else None

    def stats(self) -> dict[str, Any]:
        model = None
        if self.rescorer is not None:
            meta = self.rescorer.metadata
            model = {"path": str(self.rescorer.path), "version": meta.model_version}
        sources, source_count = self.events.sources(SOURCES)
        return {
            "topic": self.topic,
            "cluster": self.connection.describe(),
            "metrics": self.metrics.read(),
            "events": self.events.total,
            "unreadable_events": self.events.unreadable,
            "sources": sources,
            "source_count": source_count,
            "model": model,
            "failure": self.failure,
            "episodes": self.episodes,
        }

    def beats(self) -> dict[str, Any]:
        return {"beats": [self.lookup.view(event) for event in self.events.latest()]}


class _Handler(BaseHTTPRequestHandler):
    page: LivePage

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/api/stats":
            self._send(orjson.dumps(self.page.stats()), "application/json")
        elif path == "/api/beats":
            self._send(orjson.dumps(self.page.beats()), "application/json")
        elif path in STATIC:
            name, content_type = STATIC[path]
            self._send(
                resources.files("ecg_anomaly.tools").joinpath("static", "live", name).read_bytes(),
                content_type,
            )
        else:
            self.send_error(404)

    def _send(self, body: bytes, content_type: str) -> None:
        try:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)
        except ConnectionError:  # the browser left (a closed tab): not worth a traceback in the terminal
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """No line per request: the page polls every few seconds."""


def serve(connection: KafkaConnection, topic: str, values: dict[str, Any], stopping: list[bool]) -> int:
    """``watch --web``: serve the page until ``stopping`` (Ctrl-C) or the topic can no longer be read."""
    with ExitStack() as stack:
        page = LivePage(connection, topic, values["model"], values["metrics_url"], values["from_beginning"])
        url = page.start(stack, values["web_port"])
        print(f"watch: live page at {url} following {topic} at {connection.describe()}", file=sys.stderr)
        while not stopping and page.failure is None:
            time.sleep(0.25)
        if page.failure is not None:
            raise EcgAnomalyError(page.failure)
    return 0
