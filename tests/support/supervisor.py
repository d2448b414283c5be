"""Keep a worker subprocess running the way Kubernetes keeps a pod running.

``restartPolicy: Always`` plus a liveness probe: when the process exits it is
started again; when ``/healthz`` has failed for ``liveness_grace`` seconds in
a row (the probe's ``periodSeconds x failureThreshold``) it is SIGKILLed and
started again. Tests inject their own faults (:meth:`Supervisor.kill`) and
read the restart count and exit codes afterwards.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

from tests.support.worker import WorkerProcess


class Supervisor:
    """Runs ``make_worker(n)`` (the n-th incarnation) and restarts it on exit or failed liveness."""

    def __init__(
        self,
        make_worker: Callable[[int], WorkerProcess],
        liveness_grace: float = 30.0,
        probe_period: float = 1.0,
        startup_grace: float = 180.0,
    ) -> None:
        self._make = make_worker
        self.liveness_grace = liveness_grace
        self.probe_period = probe_period
        self.startup_grace = startup_grace  # a startupProbe: no liveness kills before the first 200
        self.exit_codes: list[int] = []  # of every incarnation that ended (SIGKILL is -9)
        self.liveness_kills = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._incarnation = 0
        self.current = self._make(0).start()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()

    @property
    def restarts(self) -> int:
        return self._incarnation

    def kill(self, signum: int = signal.SIGKILL) -> WorkerProcess:
        """Send ``signum`` to the current worker (a test's fault); return it."""
        with self._lock:
            worker = self.current
            worker.signal(signum)
        return worker

    def wait_ready(self, timeout: float = 300.0) -> float:
        """Seconds until the current incarnation (whichever it is by then) answers /readyz with 200."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.current.status("/readyz") == 200:
                return time.monotonic() - start
            time.sleep(0.1)
        raise AssertionError(f"no ready worker after {timeout} s:\n{self.current.log()}")

    def stop(self) -> int:
        """Stop supervising, SIGTERM the current worker and return its exit code."""
        self._stopped.set()
        self._thread.join()
        worker = self.current
        worker.stop()
        assert worker.proc is not None
        return int(worker.proc.returncode)

    def _watch(self) -> None:
        started = time.monotonic()
        seen_live = False
        failing_since: float | None = None
        while not self._stopped.wait(self.probe_period):
            worker = self.current
            assert worker.proc is not None
            code = worker.proc.poll()
            if code is None:
                live = worker.status("/healthz") == 200
                now = time.monotonic()
                seen_live = seen_live or live
                if live:
                    failing_since = None
                    continue
                failing_since = failing_since or now
                if now - (failing_since if seen_live else started) < (
                    self.liveness_grace if seen_live else self.startup_grace
                ):
                    continue
                self.liveness_kills += 1
                worker.proc.kill()
                code = worker.proc.wait()
            with self._lock:
                if self._stopped.is_set():
                    return
                self.exit_codes.append(code)
                self._incarnation += 1
                self.current = self._make(self._incarnation).start()
            started, seen_live, failing_since = time.monotonic(), False, None
