"""A watchdog that ends the process when a Kafka call or the drain overruns: a restart beats a hang."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

WATCHDOG_EXIT = 70  # a guarded Kafka call overran: the pod should restart


class Watchdog:
    """Ends the process if a guarded call overruns, or a drain its deadline: a restart beats a hang.

    One daemon thread checks two deadlines: the current guarded call's and, once
    a stop was requested, the drain's. State is set by plain attribute
    assignment (no lock), so :meth:`final_deadline` is safe in a signal handler.
    The exit is ``os._exit`` because the main thread is the one that is stuck.
    """

    def __init__(self) -> None:
        self._call: tuple[float, str, float] | None = None  # (deadline, name, started)
        self._drain_until: float | None = None
        self._exit_code = WATCHDOG_EXIT
        threading.Thread(target=self._run, name="kafka-watchdog", daemon=True).start()

    @contextmanager
    def guard(self, name: str, seconds: float) -> Iterator[None]:
        now = time.monotonic()
        self._call = (now + seconds, name, now)
        try:
            yield
        finally:
            self._call = None

    def busy_for(self) -> float:
        """Seconds the current guarded call has been running (0 when none): readiness reads it."""
        call = self._call
        return 0.0 if call is None else time.monotonic() - call[2]

    def final_deadline(self, seconds: float, exit_code: int = WATCHDOG_EXIT) -> None:
        self._exit_code = exit_code
        self._drain_until = time.monotonic() + seconds

    def _run(self) -> None:
        while True:
            time.sleep(0.2)
            now, call, drain = time.monotonic(), self._call, self._drain_until
            if call is not None and now > call[0]:
                self._exit(f"Kafka call {call[1]} did not return in time", WATCHDOG_EXIT)
            if drain is not None and now > drain:
                self._exit("drain did not finish in time", self._exit_code)

    @staticmethod
    def _exit(why: str, code: int) -> None:
        log.critical("watchdog: exiting", extra={"reason": why, "exit_code": code})
        logging.shutdown()
        os._exit(code)
